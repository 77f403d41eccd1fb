"""Helpers the tests share: paths, running the command line, giving each run its own topics on the shared broker,
and building messages."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import schemas as s
from papertape.config import Settings

HERE = Path(__file__).resolve().parent  # tests/: helpers, stand-ins and user strategies
ROOT = HERE.parent  # the repository
DATA = HERE / "data"  # recorded real data (tests/data/PROVENANCE.md)
TS = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC: the event time of hand-built session messages


def fresh_namespace() -> str:
    """A topic and consumer-group prefix no other run uses."""
    return f"t{uuid.uuid4().hex[:12]}-"


def run_env(own_broker: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a `papertape run`: a namespace of its own on the suite's broker (or, with `own_broker`,
    a broker the run starts itself), and this folder importable (user strategies)."""
    env = {**os.environ, "PAPERTAPE_NAMESPACE": fresh_namespace(),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), **extra}
    if own_broker:
        env.pop("KAFKA_BOOTSTRAP", None)
    return env


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def papertape_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "papertape.app.cli", *args]


def papertape(*args: str, timeout: float = 500, **kw) -> subprocess.CompletedProcess:
    """The command line, as a user runs it; a `run` gets a namespace of its own."""
    env = run_env() if args[:1] == ("run",) else None
    return subprocess.run(papertape_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env, **kw)


def run_settings(**fields) -> Settings:
    """Settings of an in-process Pipeline: the environment's broker (the suite's), a namespace of its own."""
    return Settings(**fields).with_env().model_copy(update={"namespace": fresh_namespace()})


def query_rows(data_dir: Path, queries: dict[str, str]) -> dict[str, list]:
    """Each query's rows, through `papertape sql --json` on the run's data directory."""
    out = {}
    for name, sql in queries.items():
        r = papertape("sql", "--json", "--data-dir", str(data_dir), sql)
        assert r.returncode == 0, r.stderr
        out[name] = json.loads(r.stdout)["rows"]
    return out


def scan_for_secrets(data: Path, output: str, secrets: list[str], also: Iterable[Path] = ()) -> list[str]:
    """Where a secret appears: the commands' output, any file of the run (logs, settings, the broker's segments) or
    under `also` (a report, an export), and every row of every ClickHouse table (topics are recorded there whole)."""
    found = [f"output: {s}" for s in secrets if s in output]
    for root in (data, *also):
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                raw = path.read_bytes()
                found += [f"{path}: {s}" for s in secrets if s.encode() in raw]
    names = query_rows(data, {"t": "SELECT name FROM system.tables WHERE database = currentDatabase() "
                                    "AND engine LIKE '%MergeTree'"})["t"]
    dump = " UNION ALL ".join(f"SELECT '{t}', formatRowNoNewline('TSV', *) FROM {t}" for (t,) in names)
    rows = query_rows(data, {"dump": dump})["dump"]  # every table in one query: a command per table took a minute
    return found + sorted({f"table {t}: {s}" for t, row in rows for s in secrets if s in row})


def tick(symbol: str, ts: int, bid: str | None = None, ask: str | None = None, bq: str | None = None,
         aq: str | None = None, trades: Iterable[tuple[str, str, str]] = (), pos: int = 0, mark: str | None = None,
         depth: tuple | None = None, funding: tuple | None = None, status: str = "live") -> s.Tick:
    """A tick as the market actor sends it to engines; `trades` are (price, qty, aggressor side)."""
    return s.Tick(symbol, ts, bid, ask, bq, aq, [s.TickTrade(ts, p, q, side) for p, q, side in trades], pos, mark,
                  status, None, depth, funding)


def decision(n: int, session: str = "rt", **kw) -> s.Decision:
    """The n-th decision of `session`, n seconds after TS (fields overridable)."""
    fields = {"symbol": "BTCUSDT", "action": "buy", "reasoning": f"decision {n}", "confidence": 0.75,
              "risk_score": 0.125, "opportunity_score": 0.5, "intel": 7} | kw
    return s.Decision(id=f"{session}-{n}:d", ts=TS + 1000 * n, session=session, **fields)


def status(n: int, ts: int, state: str, event: str, breakers: dict | None = None, intel: int = 7) -> s.SessionStatus:
    """The n-th status message of session "rt"."""
    return s.SessionStatus(id=f"rt:status:{n}", ts=ts, session="rt", status=state, event=event,
                           strategy="ema_cross", intel=intel, breakers=breakers or {},
                           config={"id": "rt", "intel": intel, "risk": {"max_daily_trades": 3},
                                   "balance": "5000"})
