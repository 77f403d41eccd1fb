"""`papertape session ...`: start, stop, pause, resume and reconfigure sessions of a running pipeline, and list
and show them from the archive.

Commands that change a session send one `schemas.Control` to the `control` topic, keyed by the session: the
engine that owns the session's partition applies it at its event time when it reads it, and answers with a
status message on `sessions` (recorded in ClickHouse) or, when it cannot apply it, a dead letter with the reason.
The control's `ts` is the wall clock, for information only.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import tomllib
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

import schemas as s
from infra.archive import Archive, NoHistory, columns, records, sql_string, tables
from infra.sql_endpoint import running
from papertape.app.formatting import for_display, format_table
from papertape.config import Settings, load_settings, run_settings
from papertape.core.session.config import RECONFIGURABLE, SessionConfig
from papertape.core.strategies import make_strategy

SESSION_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SEND_TIMEOUT_S = 30.0
# The engine numbers its messages (status changes, decisions, fills): the last number of an id orders messages
# of the same event time (`:f10` after `:f9`, which text order would not give).
SEQ = r"toUInt64OrZero(extract(id, '(\\d+)\\D*$'))"


class CliError(Exception):
    """A clear message for the user, and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --- key=value arguments ----------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """JSON when it parses (3, 0.5, true, null, ["BTCUSDT"], {"a": 1}), else the text itself."""

    def no_constant(name: str) -> Any:
        raise ValueError(name)  # NaN and Infinity are no config values: keep them as text

    try:
        return json.loads(text, parse_constant=no_constant)
    except ValueError:
        return text


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`key=value` arguments as a dict; a dotted key makes nested dicts: `risk.max_daily_trades=3` ->
    {"risk": {"max_daily_trades": 3}}. Values as parse_value reads them. Raises CliError on a bad argument."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        path = key.strip().split(".")
        if not eq or not all(path):
            raise CliError(f"expected key=value (a dotted key for nested settings: risk.max_daily_trades=3), "
                           f"got {item!r}")
        node = out
        for i, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CliError(f"{item!r}: {'.'.join(path[:i + 1])} is already set to a value")
        if path[-1] in node:
            raise CliError(f"{key.strip()} is set twice")
        node[path[-1]] = parse_value(text)
    return out


def deep_merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied, nested dicts key by key."""
    out = dict(base)
    for k, v in changes.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --- validation -------------------------------------------------------------------------------------------

def check_id(session: str) -> str:
    if not SESSION_ID.match(session):
        raise CliError(f"bad session id {session!r}: 1 to 64 letters, digits, '.', '_' or '-'")
    return session


def _config_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "config"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def start_config(session: str, config_file: Path | None = None, strategy: str | None = None,
                 intel: int | None = None, balance: str | None = None, symbols: list[str] | None = None,
                 params: Sequence[str] = (), settings: Sequence[str] = ()) -> dict[str, Any]:
    """The config a `start` sends: the file's, then the options, then --param (into params), then --set.

    The file holds a session's fields (the keys of a [[sessions]] entry of a settings file), or is a settings
    file with [[sessions]]: then the entry with this id, or its only entry. Its id, if any, becomes `session`."""
    config: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CliError(f"cannot read {config_file}: {exc}") from None
        if isinstance(data.get("sessions"), list):
            entries = [e for e in data["sessions"] if isinstance(e, dict)]
            chosen = [e for e in entries if e.get("id") == session] or (entries if len(entries) == 1 else [])
            if not chosen:
                ids = ", ".join(str(e.get("id")) for e in entries) or "none"
                raise CliError(f"{config_file} has no [[sessions]] entry with id {session!r} (ids: {ids})")
            data = chosen[0]
        config = {k: v for k, v in data.items() if k != "id"}
    options = {"strategy": strategy, "intel": intel, "balance": balance, "symbols": symbols}
    config.update({k: v for k, v in options.items() if v is not None})
    if params:
        config = deep_merge(config, {"params": parse_assignments(list(params))})
    if settings:
        config = deep_merge(config, parse_assignments(list(settings)))
    config.pop("id", None)
    return config


def validate_start(session: str, config: dict[str, Any], known_symbols: set[str] | None = None):
    """The SessionConfig `config` makes, with its strategy built once; CliError saying what is wrong."""
    try:
        cfg = SessionConfig.model_validate({**config, "id": session})
    except ValidationError as exc:
        raise CliError(f"invalid session config for {session!r}:\n{_config_errors(exc)}") from None
    try:
        make_strategy(cfg.strategy, cfg.params)
    except ValueError as exc:
        raise CliError(f"invalid session config for {session!r}: {exc}") from None
    if known_symbols is not None:
        unknown = sorted(set(cfg.symbols) - known_symbols - {"*"})
        if unknown:
            some = ", ".join(sorted(known_symbols)[:20]) + (", ..." if len(known_symbols) > 20 else "")
            raise CliError(f"invalid session config for {session!r}: the running pipeline has no instrument "
                           f"{', '.join(unknown)} (it has {some})")
    return cfg


def validate_changes(session: str, changes: dict[str, Any]) -> None:
    """A `config` command's changes: only keys a running session may change, with values of the right type
    (checked against a default config: the session's own is the engine's to check)."""
    if not changes:
        raise CliError("nothing to change: give key=value arguments")
    fixed = sorted(set(changes) - RECONFIGURABLE)
    if fixed:
        raise CliError(f"a running session cannot change {', '.join(fixed)}: start a new session for that "
                       f"(changeable: {', '.join(sorted(RECONFIGURABLE))})")
    try:
        SessionConfig.model_validate(deep_merge(SessionConfig(id=session).model_dump(), changes))
    except ValidationError as exc:
        raise CliError(f"invalid change for {session!r}:\n{_config_errors(exc)}") from None
    if "strategy" in changes and "params" in changes:
        try:
            make_strategy(changes["strategy"], changes["params"])
        except ValueError as exc:
            raise CliError(f"invalid change for {session!r}: {exc}") from None


def _known_symbols(data_dir: Path) -> set[str] | None:
    """The instruments of the pipeline running in `data_dir`, if one is (None: unknown, not checked)."""
    run = run_settings(data_dir) if running(data_dir) else None
    return set(run.instrument_map()) if run is not None else None


# --- sending ----------------------------------------------------------------------------------------------

def control(session: str, command: str, config: dict[str, Any] | None = None) -> s.Control:
    return s.Control(id=f"cli:{uuid.uuid4().hex}", ts=int(time.time() * 1000), session=session, command=command,
                     config=config or {})


def broker_of(data_dir: Path, settings: Settings) -> tuple[str, s.Namespace] | None:
    """The broker and namespace of the run in progress in `data_dir`, else the settings' (KAFKA_BOOTSTRAP,
    PAPERTAPE_NAMESPACE); None without either."""
    info = running(data_dir)
    if info and info.get("bootstrap"):
        return info["bootstrap"], s.Namespace(info.get("namespace", ""))
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap, settings.names
    return None


def bootstrap_servers(data_dir: Path) -> tuple[str, s.Namespace]:
    """broker_of the environment's settings; CliError (exit 2) without a broker."""
    where = broker_of(data_dir, load_settings())
    if where is not None:
        return where
    raise CliError(f"no run in progress in {data_dir} and KAFKA_BOOTSTRAP is not set: start one with "
                   "`papertape run` (or `--data-dir` its directory), or set KAFKA_BOOTSTRAP", code=2)


async def send_control(bootstrap: str, ctrl: s.Control, timeout: float = SEND_TIMEOUT_S,
                       names: s.Namespace = s.Namespace()) -> None:
    """Produce `ctrl` to `control`, keyed by its session, and wait for the broker's ack."""
    # a control is one message: a retried send may repeat it, and start, pause, resume, stop and config all
    # tolerate being applied twice, so the producer needs no idempotence (which Tansu, too, would refuse)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                request_timeout_ms=int(timeout * 1000))

    async def go() -> None:
        await producer.start()
        await producer.send_and_wait(names.topic("control"), s.encode(ctrl), key=ctrl.session.encode())

    try:
        await asyncio.wait_for(go(), timeout)
    finally:
        await producer.stop()


def _send(data_dir: Path, ctrl: s.Control, say: bool = True) -> int:
    bootstrap, names = bootstrap_servers(data_dir)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection errors: the one below says it
    try:
        asyncio.run(send_control(bootstrap, ctrl, names=names))
    except asyncio.TimeoutError:
        raise CliError(f"could not send to Kafka at {bootstrap}: no answer within {SEND_TIMEOUT_S:g} s") from None
    except Exception as exc:
        raise CliError(f"could not send to Kafka at {bootstrap}: {str(exc) or type(exc).__name__}") from None
    if say:
        print(f"{ctrl.command} sent to session {ctrl.session} ({ctrl.id} on {bootstrap}); the engine applies it when "
              f"it reads it: `papertape session show {ctrl.session}` shows the result")
    return 0


# --- commands ---------------------------------------------------------------------------------------------

def main(args) -> int:
    """Runs `papertape session <command>`; errors are printed to stderr with their exit code."""
    commands: dict[str, Callable[[Any, Path], int]] = {
        "start": cmd_start, "stop": cmd_simple, "pause": cmd_simple, "resume": cmd_simple, "config": cmd_config,
        "list": cmd_list, "show": cmd_show}
    try:
        return commands[args.session_command](args, data_dir_of(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def data_dir_of(args) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    return load_settings().data_dir  # the default, or PAPERTAPE_DATA


def cmd_start(args, data_dir: Path) -> int:
    session = check_id(args.id)
    config = start_config(session, args.config, args.strategy, args.intel, args.balance, args.symbols,
                          args.param or [], args.set or [])
    validate_start(session, config, _known_symbols(data_dir))
    return _send(data_dir, control(session, "start", config))


def cmd_simple(args, data_dir: Path) -> int:
    return _send(data_dir, control(check_id(args.id), args.session_command))


def cmd_config(args, data_dir: Path) -> int:
    session = check_id(args.id)
    changes = parse_assignments(args.changes)
    validate_changes(session, changes)
    return _send(data_dir, control(session, "config", changes))


# --- reading the archive ----------------------------------------------------------------------------------

def from_archive(data_dir: Path, read: Callable[[Callable[..., dict]], Any],
                  query: Callable[[str], dict] | None = None) -> Any:
    """read(query) over the history (as `papertape sql` reads it; tests give their own `query`), with CliError
    when there is none or a query fails."""
    if query is not None:
        return _read(lambda: read(query))
    try:
        archive = Archive(data_dir, load_settings().clickhouse_url)  # CLICKHOUSE_URL, as every command reads it
    except NoHistory as exc:
        raise CliError(str(exc)) from None
    with archive:
        return _read(lambda: read(archive.query))


# The status table of an archive from before migration 003: empty.
_NO_SESSIONS = ("(SELECT '' AS session, toDateTime64(0, 3, 'UTC') AS ts, '' AS id, '' AS status, '' AS strategy, "
                "toUInt8(0) AS intel, '{}' AS breakers, '{}' AS config, '' AS event WHERE 0)")

def list_sessions(query: Callable[[str], dict]) -> dict:
    """One row per session seen in `sessions` or `equity` (older runs have only equity): its latest status,
    latest equity and cash, open positions, fill and decision counts, tripped breakers and the latest event
    time of either."""
    table_names = tables(query)
    if "equity" not in table_names:
        raise CliError("the archive has no tables yet (no run recorded into it)")
    sessions = "sessions" if "sessions" in table_names else _NO_SESSIONS
    return query(f"""
        WITH
          ids AS (SELECT session, max(ts) AS as_of
                  FROM (SELECT session, ts FROM {sessions} UNION ALL SELECT session, ts FROM equity)
                  GROUP BY session),
          st AS (SELECT session, argMax(status, k) AS status, argMax(strategy, k) AS strategy,
                        argMax(intel, k) AS intel, argMax(breakers, k) AS breakers
                 FROM (SELECT session, status, strategy, intel, breakers, (ts, {SEQ}, id) AS k FROM {sessions})
                 GROUP BY session),
          eq AS (SELECT session, argMax(equity, ts) AS equity, argMax(cash, ts) AS cash FROM equity GROUP BY session),
          pos AS (SELECT session, countIf(qty != 0) AS open_positions
                  FROM (SELECT session, symbol, argMax(qty, (ts, {SEQ}, id)) AS qty FROM positions
                        GROUP BY session, symbol)
                  GROUP BY session),
          fl AS (SELECT session, count() AS fills FROM fills GROUP BY session),
          dc AS (SELECT session, count() AS decisions FROM decisions GROUP BY session)
        SELECT ids.session AS session, st.status AS status, st.strategy AS strategy, st.intel AS intel,
               eq.equity AS equity, eq.cash AS cash, ifNull(pos.open_positions, 0) AS open_positions,
               ifNull(fl.fills, 0) AS fills, ifNull(dc.decisions, 0) AS decisions,
               JSONExtractKeys(ifNull(st.breakers, '{{}}')) AS breakers,
               toString(ids.as_of) AS as_of
        FROM ids
        LEFT JOIN st ON st.session = ids.session
        LEFT JOIN eq ON eq.session = ids.session
        LEFT JOIN pos ON pos.session = ids.session
        LEFT JOIN fl ON fl.session = ids.session
        LEFT JOIN dc ON dc.session = ids.session
        ORDER BY session
        SETTINGS join_use_nulls = 1""")


def show_session(query: Callable[[str], dict], session: str) -> dict:
    """The session's latest status (with its config and tripped breakers), latest equity, open positions and
    last 10 decisions, each as a query result; CliError when the archive has nothing of it."""
    table_names = tables(query)
    if "equity" not in table_names:
        raise CliError("the archive has no tables yet (no run recorded into it)")
    sid = sql_string(session)
    status: dict[str, Any] = {"columns": [], "types": [], "rows": []}
    if "sessions" in table_names:
        status = query(f"""
            SELECT session, status, event, strategy, intel, toString(ts) AS as_of, breakers, config
            FROM sessions WHERE session = {sid} ORDER BY ts DESC, {SEQ} DESC, id DESC LIMIT 1""")
    # an archive from before migration 002 has no funding column, from before 003 no scores
    have = columns(query, "equity") | columns(query, "decisions")
    funding = "funding" if "funding" in have else "toDecimal128(0, 18) AS funding"
    scores = ", ".join(c if c in have else f"CAST(NULL AS Nullable(Float64)) AS {c}"
                       for c in ("risk_score", "opportunity_score"))
    equity = query(f"""
        SELECT equity, cash, realized_pnl, unrealized_pnl, fees, {funding}, open_positions, toString(ts) AS as_of
        FROM equity WHERE session = {sid} ORDER BY ts DESC, id DESC LIMIT 1""")
    positions = query(f"""
        SELECT symbol, qty, avg_price, mark, unrealized_pnl, realized_pnl, toString(as_of) AS as_of
        FROM (SELECT symbol, argMax(qty, k) AS qty, argMax(avg_price, k) AS avg_price, argMax(mark, k) AS mark,
                     argMax(unrealized_pnl, k) AS unrealized_pnl, argMax(realized_pnl, k) AS realized_pnl,
                     max(ts) AS as_of
              FROM (SELECT *, (ts, {SEQ}, id) AS k FROM positions WHERE session = {sid}) GROUP BY symbol)
        WHERE qty != 0 ORDER BY symbol""")
    decisions = query(f"""
        SELECT toString(ts) AS ts, symbol, action, confidence, {scores}, reasoning
        FROM (SELECT *, {SEQ} AS seq FROM decisions WHERE session = {sid} ORDER BY ts DESC, seq DESC, id DESC LIMIT 10)
        ORDER BY ts, seq, id""")
    if not status["rows"] and not equity["rows"] and not decisions["rows"]:
        raise CliError(f"no session {session!r} in the history")
    return {"status": status, "equity": equity, "positions": positions, "decisions": decisions}


def _first(result: dict) -> dict | None:
    """The result's first row as a record, None when it has no rows."""
    rows = records(result)
    return rows[0] if rows else None


def _read(fn: Callable[[], Any]) -> Any:
    """fn(), with a failing query's message (ClickHouse's) as the error."""
    try:
        return fn()
    except CliError:
        raise
    except Exception as exc:
        raise CliError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def cmd_list(args, data_dir: Path, query: Callable[[str], dict] | None = None) -> int:
    result = from_archive(data_dir, list_sessions, query)
    if args.json:  # as `papertape sql --json` prints a result
        print(json.dumps(for_display(result, exact_values=True), default=str))
    else:
        print(format_table(for_display(result)))
    return 0


def cmd_show(args, data_dir: Path, query: Callable[[str], dict] | None = None) -> int:
    session = check_id(args.id)
    found = from_archive(data_dir, lambda q: show_session(q, session), query)
    status = _first(found["status"])
    equity = _first(for_display(found["equity"], exact_values=True))
    config = json.loads(status["config"]) if status else None
    breakers = json.loads(status["breakers"]) if status else {}
    if args.json:
        if status:
            status = {k: v for k, v in status.items() if k not in ("config", "breakers")}
        print(json.dumps({"session": session, "status": status, "breakers": breakers, "config": config,
                          "equity": equity,
                          "positions": records(for_display(found["positions"], exact_values=True)),
                          "decisions": records(for_display(found["decisions"], exact_values=True))}, default=str))
        return 0
    st = status or {}
    eq = _first(for_display(found["equity"])) or {}
    as_of = max((x for x in (st.get("as_of"), eq.get("as_of")) if x), default=None)
    head = {"columns": ["session", "status", "event", "strategy", "intel", "equity", "cash", "fees", "as_of"],
            "types": ["", "", "", "", "UInt8", "Decimal", "Decimal", "Decimal", ""],
            "rows": [[session, st.get("status"), st.get("event"), st.get("strategy"), st.get("intel"),
                      eq.get("equity"), eq.get("cash"), eq.get("fees"), as_of]]}
    out = [format_table(head)]
    if breakers:
        out.append("tripped circuit breakers (new entries blocked until the day ends):")
        out += [f"  {name}: {why}" for name, why in sorted(breakers.items())]
    if status is None:
        out.append("no status recorded: a session of a run from before run-time sessions")
    else:
        out += ["", "config:", json.dumps(config, indent=2, sort_keys=True)]
    out += ["", "positions:", format_table(for_display(found["positions"])),
            "", "last decisions:", format_table(for_display(found["decisions"]), max_width=80)]
    print("\n".join(out))
    return 0
