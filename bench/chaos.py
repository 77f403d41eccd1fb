"""Issue 19: a chaos run. The bundled real tape replayed through papertape's production topology on one machine (an
Apache Kafka broker, two workers, the recorder with its embedded ClickHouse, the alert relay, a replay producer)
while a seeded schedule of faults hits it:

- SIGKILLs of the workers, the recorder and the alert relay at random moments (each restarted at once, as a
  supervisor or Docker's `restart: unless-stopped` would);
- one SIGKILL of the Kafka broker, restarted on its log directory a few seconds later;
- the archive unreachable for a while: the recorder, whose ClickHouse is embedded (chdb has no network to cut),
  frozen with SIGSTOP, then resumed;
- a network cut between one worker and the broker: that worker reaches Kafka only through a TCP proxy (a second
  listener of the broker advertises the proxy's address), which drops every connection and refuses new ones.

At the end every table of the archive is compared, sorted, with an uninterrupted `papertape run` of the same tape
and config: fills, order events, positions, equity, funding, decisions, session statuses, dead letters, the
market's trades and quotes, and the trading pipeline's alerts. Every alert the relay delivered reached the webhook
stand-in; each alert id must arrive at least once, and the duplicates (a relay killed after a channel took an alert
and before it recorded so) are counted: a receiver deduplicating by the alert id sees each exactly once.

Run on demand: python bench/chaos.py [--seed N] [--seconds S] [--kills N] [--freeze-s S] [--cut-s S]
The reduced variant runs in CI: tests/integration/test_chaos.py.
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.kafka import EmbeddedKafka  # noqa: E402
from infra.sql_endpoint import query_remote  # noqa: E402
from papertape.config import BUNDLED_TAPE  # noqa: E402
from schemas.topics import kafka_partition  # noqa: E402
from streams.sources.replay import ReplaySource  # noqa: E402

SESSIONS = (Path(__file__).parent / "chaos_sessions.toml").read_text()
CONFIG = """
md_partitions = 2
session_partitions = 2
checkpoint_every_s = 0.5
replay_seconds = {seconds}
prometheus_port = 0

[alerts]
relay = "external"
aggregate_s = 0
repeat_s = 0
[[alerts.channels]]
name = "hook"
url = "{hook}"
min_severity = "info"
"""

# every table whose rows the trading pipeline makes, with the columns compared (the recorder's own bookkeeping and
# the relay's deliveries are not the pipeline's results)
TABLES = {
    "fills": "id, session, symbol, side, price, qty, liquidity, fee, realized_pnl, ts, exec_type",
    "order_events": "id, session, status, qty, price, filled_qty, avg_price, reason, ts",
    "positions": "id, session, symbol, qty, avg_price, realized_pnl, unrealized_pnl, ts",
    "equity": "id, session, cash, equity, realized_pnl, unrealized_pnl, fees, funding, open_positions, ts",
    "funding": "id, session, symbol, rate, mark, qty, amount, ts",
    "decisions": "id, session, symbol, action, reasoning, confidence, risk_score, opportunity_score, order_id, ts",
    "sessions": "id, session, status, event, breakers, config, ts",
    "dead_letters": "id, topic, error, ts",
    "md_trades": "id, symbol, price, qty, side, ts",
    "md_quotes": "id, symbol, bid, bid_qty, ask, ask_qty, ts",
    "alerts": "id, severity, type, source, title, text, session, ts",
}
# what the recorder's own edge posts about itself (lag, failing inserts) depends on the faults, not the trading
PIPELINE_ALERTS = "source NOT IN ('clickhouse', 'recorder', 'supervisor')"


def env_with(**extra: str) -> dict[str, str]:
    """This environment, without a broker or namespace of its own (each run here starts its own broker)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "PAPERTAPE_NAMESPACE")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def papertape(*args: str) -> list[str]:
    return [sys.executable, "-m", "papertape.app.cli", *args]


# --- the stand-ins the harness controls -----------------------------------------------------------------------
class Webhook:
    """The alert channel: records each alert id it receives (the relay posts the alert as JSON)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                hook.received += body.get("alert_ids") or [body.get("id", "")]
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()


class Proxy:
    """A TCP proxy to the broker's second listener; `cut` drops every connection and refuses new ones."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.open = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def heal(self) -> None:
        self.open = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the processes ---------------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Report:
    faults: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.faults.append(line)
        print(line, flush=True)


# --- the runs --------------------------------------------------------------------------------------------------
def baseline(root: Path, seconds: float, hook: str) -> dict[str, list]:
    config = root / "baseline.toml"
    config.write_text(CONFIG.format(seconds=seconds, hook=hook) + SESSIONS)
    data = root / "baseline"
    r = subprocess.run(papertape("run", "--config", str(config), "--data-dir", str(data)), env=env_with(),
                       capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{r.stdout}\n{r.stderr}")
    return dump(lambda sql: query_local_archive(data, sql))


def query_local_archive(data: Path, sql: str) -> list:
    r = subprocess.run(papertape("sql", "--json", "--data-dir", str(data), sql), env=env_with(), capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout)["rows"]


def dump(query) -> dict[str, list]:
    out = {}
    for table, columns in TABLES.items():
        where = f" WHERE {PIPELINE_ALERTS}" if table == "alerts" else ""
        rows = query(f"SELECT {columns} FROM {table}{where}")
        out[table] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out


async def replay(bootstrap: str, seconds: float, speed: float) -> dict:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=1 << 20, request_timeout_ms=60_000)
    await producer.start()

    async def send(topic, key, value, partition):
        await producer.send(topic, value=value, key=key, partition=partition)

    try:
        summary = await ReplaySource(BUNDLED_TAPE, send, 2, kafka_partition, speed=speed, max_seconds=seconds).run()
        await producer.flush()
    finally:
        await producer.stop()
    return {"frames": summary.frames, "trades": summary.trades}


def chaos(root: Path, seconds: float, speed: float, seed: int, kills: int, freeze_s: float, cut_s: float,
          webhook: Webhook, report: Report) -> tuple[dict[str, list], dict]:
    rng = random.Random(seed)
    data = root / "chaos"
    data.mkdir(parents=True)
    cluster = EmbeddedKafka(root / "kafka", nodes=1, start=False)
    node = cluster.nodes[0]
    cut_port = free_port()
    proxy = Proxy(cut_port)
    cluster.overrides.update({
        "listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port},"
                     f"CUT://127.0.0.1:{cut_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},CUT://127.0.0.1:{proxy.port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CUT:PLAINTEXT"})
    cluster.start()
    config = root / "chaos.toml"
    config.write_text(CONFIG.format(seconds=seconds, hook=webhook.url) + SESSIONS)
    direct = env_with(KAFKA_BOOTSTRAP=cluster.bootstrap)
    through_proxy = env_with(KAFKA_BOOTSTRAP=f"127.0.0.1:{proxy.port}")
    recorder = Proc("recorder", papertape("recorder", "--config", str(config), "--data-dir", str(data)), direct,
                    data.parent / "recorder.log")
    relay = Proc("relay", papertape("relay", "--config", str(config), "--data-dir", str(data)), direct,
                 data.parent / "relay.log")
    workers = [Proc(f"worker-{i}", papertape("worker", "--config", str(config)), env, data.parent / f"worker-{i}.log")
               for i, env in enumerate((direct, through_proxy))]
    procs = [recorder, relay, *workers]
    try:
        recorder.start()
        wait_for(lambda: (data / "run.json").exists(), 120, "the recorder's SQL endpoint")
        port = json.loads((data / "run.json").read_text())["sql_port"]
        for p in (relay, *workers):
            p.start()
        time.sleep(8)  # the workers join their group before the tape starts

        duration = seconds / speed
        schedule = sorted([(rng.uniform(0.05, 0.9) * duration, "kill", rng.choice(procs).name) for _ in range(kills)]
                          + [(rng.uniform(0.2, 0.6) * duration, "broker", ""),
                             (rng.uniform(0.1, 0.5) * duration, "freeze", ""),
                             (rng.uniform(0.3, 0.7) * duration, "cut", "")])
        report.say(f"seed {seed}: {len(schedule)} faults over {duration:.0f} s of replay: "
                   + ", ".join(f"{what} {who}@{at:.1f}s".replace(" @", "@") for at, what, who in schedule))
        done: dict = {}
        feeder = threading.Thread(target=lambda: done.update(asyncio.run(replay(cluster.bootstrap, seconds, speed))))
        started = time.monotonic()
        feeder.start()
        apply_faults(schedule, started, procs, cluster, proxy, freeze_s, cut_s, report)
        feeder.join()
        report.say(f"replay done: {done}")
        time.sleep(freeze_s + cut_s)  # the last fault's end

        def finished() -> bool:
            try:
                rows = query_remote(port_of(data), "SELECT count() FROM alerts WHERE title = 'tape finished'")
                return rows["rows"][0][0] >= 2
            except (OSError, RuntimeError, ValueError, KeyError):
                return False
        wait_for(finished, 600, "both engine partitions to finish the tape")
        wait_stable(data, 600)
        got = dump(lambda sql: query_remote(port_of(data), sql)["rows"])
        alert_ids = [r[0] for r in query_remote(port_of(data), "SELECT id FROM alerts")["rows"]]
        # the relay delivers each fill too, as a trading alert (streams/sinks/alerts.fill_alert: id "fill:<fill id>")
        alert_ids += [f"fill:{r[0]}" for r in query_remote(port_of(data), "SELECT id FROM fills")["rows"]]
        wait_for(lambda: set(alert_ids) <= set(webhook.received), 120, "every alert at the webhook")
        return got, {"alerts": alert_ids, "starts": {p.name: p.starts for p in procs}, "port": port, **done}
    finally:
        for p in procs:
            if p.popen is not None and p.popen.poll() is None:
                try:
                    p.popen.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            p.stop()
        cluster.stop()


def apply_faults(schedule: list[tuple[float, str, str]], started: float, procs: list[Proc], cluster: EmbeddedKafka,
                 proxy: Proxy, freeze_s: float, cut_s: float, report: Report) -> None:
    """Each fault of `schedule` ((seconds after `started`, what, whom)) at its time."""
    by_name = {p.name: p for p in procs}
    thawed_at = 0.0  # when the frozen recorder resumes (monotonic)
    pending = list(schedule)
    heapq.heapify(pending)
    while pending:
        at, what, who = heapq.heappop(pending)
        time.sleep(max(0.0, started + at - time.monotonic()))
        if what == "kill":
            if who == "recorder" and time.monotonic() < thawed_at:  # a frozen recorder killed would come back unfrozen
                heapq.heappush(pending, (thawed_at + 0.5 - started, what, who))
                continue
            p = by_name[who]
            if p.popen is not None and p.popen.poll() is None:
                p.kill()
            report.say(f"SIGKILL {who} (start {p.starts})")
            p.start()
        elif what == "broker":
            cluster.kill(0)
            report.say("SIGKILL the Kafka broker")
            time.sleep(3)
            cluster.start_node(0)
            report.say("the Kafka broker restarted on its log directory")
        elif what == "freeze":
            assert by_name["recorder"].popen is not None
            frozen = by_name["recorder"].popen
            frozen.send_signal(signal.SIGSTOP)
            thawed_at = time.monotonic() + freeze_s
            report.say(f"the recorder (the archive) frozen for {freeze_s:g} s")
            threading.Timer(freeze_s, lambda: (frozen.send_signal(signal.SIGCONT),
                                               report.say("the recorder resumed"))).start()
        else:
            proxy.cut()
            report.say(f"network cut between worker-1 and the broker for {cut_s:g} s")
            threading.Timer(cut_s, lambda: (proxy.heal(), report.say("network to worker-1 restored"))).start()


def port_of(data: Path) -> int:
    return json.loads((data / "run.json").read_text())["sql_port"]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def wait_stable(data: Path, timeout: float) -> None:
    """Until the archive's row counts stop moving (the recorder caught up with every topic)."""
    sql = " UNION ALL ".join(f"SELECT '{t}', count() FROM {t}" for t in TABLES)
    last, same, deadline = None, 0, time.monotonic() + timeout
    while same < 4:
        if time.monotonic() > deadline:
            raise SystemExit("the archive never settled")
        try:
            now = sorted(map(tuple, query_remote(port_of(data), sql)["rows"]))
        except (OSError, RuntimeError, ValueError):
            now = None
        same = same + 1 if now is not None and now == last else 0
        last = now
        time.sleep(1.5)


def compare(expected: dict[str, list], got: dict[str, list]) -> list[str]:
    problems = []
    for table in TABLES:
        a, b = expected[table], got[table]
        if a != b:
            missing, extra = Counter(a) - Counter(b), Counter(b) - Counter(a)
            problems.append(f"{table}: {len(a)} rows expected, {len(b)} found; missing {sum(missing.values())} "
                            f"(e.g. {next(iter(missing), '')[:200]}), extra {sum(extra.values())} "
                            f"(e.g. {next(iter(extra), '')[:200]})")
    return problems


def run(root: Path, seconds: float, speed: float, seed: int, kills: int, freeze_s: float, cut_s: float) -> dict:
    """Both runs and the comparison; a dict of figures (and `problems`, empty when nothing was lost or doubled)."""
    report = Report()
    webhook = Webhook()
    try:
        t0 = time.monotonic()
        expected = baseline(root, seconds, webhook.url)
        report.say(f"uninterrupted run: {sum(map(len, expected.values()))} rows in {len(TABLES)} tables "
                   f"({time.monotonic() - t0:.0f} s)")
        before = len(webhook.received)
        t1 = time.monotonic()
        got, info = chaos(root, seconds, speed, seed, kills, freeze_s, cut_s, webhook, report)
        received = Counter(webhook.received[before:])
        problems = compare(expected, got)
        missing_alerts = [a for a in info["alerts"] if a not in received]
        if missing_alerts:
            problems.append(f"alerts never delivered: {missing_alerts[:5]}")
        figures = {"events": info.get("frames"), "rows": {t: len(v) for t, v in got.items()},
                   "starts": info["starts"], "alerts": len(info["alerts"]),
                   "alert_duplicates": sum(n - 1 for n in received.values() if n > 1),
                   "chaos_s": round(time.monotonic() - t1), "faults": report.faults, "problems": problems}
        return figures
    finally:
        webhook.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--seconds", type=float, default=600, help="of the tape (the bundled one holds ~10 min)")
    ap.add_argument("--speed", type=float, default=8, help="x real time")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--freeze-s", type=float, default=60)
    ap.add_argument("--cut-s", type=float, default=20)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the producer's reconnect noise while the broker is down
    root = args.dir or Path(f"/tmp/papertape-chaos-{args.seed}-{int(time.time())}")
    root.mkdir(parents=True, exist_ok=True)
    figures = run(root, args.seconds, args.speed, args.seed, args.kills, args.freeze_s, args.cut_s)
    print(json.dumps({k: v for k, v in figures.items() if k != "faults"}, indent=1))
    print("RESULT:", "nothing lost, nothing doubled" if not figures["problems"] else "DIFFERENCES")
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
