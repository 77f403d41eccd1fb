"""Nothing lost, nothing doubled: a run that loses a worker, a broker, or one broker of three at a random moment
mid-replay ends with exactly the fills, order events, positions, equity and decisions of an uninterrupted run.

The uninterrupted run goes as fast as possible, the others are paced (4x real time), so this also shows pacing
does not change the results. Each kill lands at a random moment from the first decision on (the delay is in the
failure message)."""
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from builders import papertape, papertape_cmd, query_rows, run_env
from infra.kafka import EmbeddedKafka, unavailable_reason
from infra.sql_endpoint import query_remote

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
needs_kafka = pytest.mark.skipif(unavailable_reason() is not None, reason=f"Apache Kafka: {unavailable_reason()}")

CONFIG = """
md_partitions = 2
session_partitions = 2
replay_seconds = 90
checkpoint_every_s = 0.5

[[sessions]]
id = "fast"
params = { fast = 2, slow = 5, bar_ms = 2000, full_confidence_bps = 0.5 }

[[sessions]]
id = "slow"
balance = 50000
params = { fast = 3, slow = 8, bar_ms = 3000, full_confidence_bps = 0.5 }
latency_ms = 120

[[sessions]]
id = "script"
strategy = "scripted"
params = { orders = [
  { at = 1723161258000, id = "rest-buy", symbol = "BTCUSDT", side = "buy", qty = "0.002", type = "limit", price = "61790.0" },
  { at = 1723161258000, id = "stop", symbol = "BTCUSDT", side = "sell", qty = "0.001", type = "stop_market", trigger_price = "61800.0" },
  { at = 1723161258000, id = "trail", symbol = "BTCUSDT", side = "sell", qty = "0.001", type = "trailing_stop", trail_amount = "15" },
  { at = 1723161258000, id = "oco-a", symbol = "BTCUSDT", side = "sell", qty = "0.001", type = "limit", price = "61900.0", oco = "x" },
  { at = 1723161258000, id = "oco-b", symbol = "BTCUSDT", side = "sell", qty = "0.001", type = "stop_market", trigger_price = "61795.0", oco = "x" },
  { at = 1723161258000, id = "br", symbol = "BTCUSDT", side = "buy", qty = "0.001", stop_loss = "61790.0", take_profit = "61840.0" },
  { at = 1723161258000, id = "gtd", symbol = "BTCUSDT", side = "buy", qty = "0.001", type = "limit", price = "61700.0", expire_ts = 1723161300000 },
  { at = 1723161266299, symbol = "BTCUSDT", side = "buy", qty = "0.003" },
  { at = 1723161300000, symbol = "ETHUSDT", side = "sell", qty = "0.2", type = "limit", price = "2660.00" },
  { at = 1723161320000, symbol = "BTCUSDT", side = "sell", qty = "0.003", reduce_only = true },
] }
"""

QUERIES = {
    "fills": "SELECT id, session, symbol, side, price, qty, liquidity, fee, realized_pnl, ts FROM fills ORDER BY id",
    "order_events": "SELECT id, status, filled_qty, reason, ts FROM order_events ORDER BY id",
    "positions": "SELECT id, qty, avg_price, realized_pnl, unrealized_pnl FROM positions ORDER BY id",
    "equity": "SELECT id, cash, equity, fees FROM equity ORDER BY id",
    "decisions": "SELECT id, action, confidence, reasoning FROM decisions ORDER BY id",
}



@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    (tmp / "papertape.toml").write_text(CONFIG)
    r = papertape("run", "--config", str(tmp / "papertape.toml"), "--data-dir", str(tmp / "data"), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    base = query_rows(tmp / "data", QUERIES)
    assert len(base["fills"]) >= 6, "the scenario must trade"
    events = sorted((int(r[0].rsplit(":", 1)[1]), r[0].split(":")[0], r[1]) for r in base["order_events"])
    ends = {oid: status for _, oid, status in events}  # an event id is order:status:n, n counting per order
    # orders that rest from the tape's first seconds and end later, across the kills below
    assert {k: ends[f"script-c-{k}"] for k in ("rest-buy", "stop", "trail", "oco-a", "oco-b", "gtd")} == {
        "rest-buy": "filled", "stop": "filled", "trail": "filled", "oco-a": "cancelled", "oco-b": "filled",
        "gtd": "expired"}, ends
    return base


def paced_run(tmp: Path, env: dict, hit, config: str = CONFIG) -> tuple[Path, str, float]:
    """A paced run (~22 s of tape) in which `hit(data_dir)` is called at a random moment from the first decision
    on. Returns the data directory, the run's output and the moment."""
    (tmp / "papertape.toml").write_text(config)
    data = tmp / "data"
    proc = subprocess.Popen(papertape_cmd("run", "--config", str(tmp / "papertape.toml"), "--data-dir", str(data),
                                          "--speed", "4"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    delay = random.uniform(0.0, 10.0)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                port = json.loads((data / "run.json").read_text())["sql_port"]
                if query_remote(port, "SELECT count() FROM decisions")["rows"][0][0] >= 1:
                    break
            except (OSError, ValueError, KeyError, RuntimeError):
                pass
            time.sleep(0.1)
        else:
            pytest.fail("no decisions before the deadline")
        time.sleep(delay)
        finished = query_remote(port, "SELECT count() FROM alerts WHERE title = 'tape finished'")["rows"][0][0]
        assert finished == 0, f"the hit must land while the run is mid-tape ({delay:.2f} s after the first decision)"
        hit(data)
        output, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()  # the supervisor; its broker and workers die with it
    assert proc.returncode == 0, output
    return data, output, delay


def assert_same(data: Path, expected: dict, when: str) -> None:
    got = query_rows(data, QUERIES)
    for name in QUERIES:
        assert got[name] == expected[name], f"{name} (hit {when})"


def kill_worker(data: Path) -> None:
    status = papertape("status", "--data-dir", str(data))
    assert status.returncode == 0 and "run in progress" in status.stdout, status.stdout + status.stderr
    os.kill(int((data / "worker.pid").read_text()), signal.SIGKILL)


def test_a_sigkilled_worker_is_replaced_and_the_run_ends_as_if_nothing_happened(tmp_path, expected):
    data, output, delay = paced_run(tmp_path, run_env(), kill_worker)
    assert "worker exited with code -9; starting a new one" in output
    assert_same(data, expected, f"{delay:.2f} s after the first decision")


def pids_running(text: str) -> list[int]:
    """The processes whose command line holds `text`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@needs_kafka
def test_a_sigkilled_broker_comes_back_on_its_log_and_loses_nothing(tmp_path, expected):
    """The run's own embedded Kafka, killed with SIGKILL: the supervisor restarts it on the same log directory,
    the worker and the supervisor's clients reconnect, and every message written before the kill is still there."""

    def kill_broker(data: Path) -> None:
        [jvm] = pids_running(str(data / "kafka" / "node-0" / "server.properties"))
        os.kill(jvm, signal.SIGKILL)

    data, output, delay = paced_run(tmp_path, run_env(own_broker=True), kill_broker)
    assert "broker: embedded Apache Kafka" in output
    assert "broker node 0 died; restarting it on its log directory" in output
    assert_same(data, expected, f"{delay:.2f} s after the first decision")


@needs_kafka
def test_one_broker_of_three_killed_mid_run_changes_nothing(tmp_path, expected):
    """The production topology on one machine: three KRaft brokers, replication 3, min.insync.replicas 2 and
    acks=all. One broker is killed (its partitions' leaders move) and comes back later."""
    with EmbeddedKafka(tmp_path / "cluster", nodes=3) as cluster:
        victim = random.randrange(3)

        def kill_one(data: Path) -> None:
            cluster.kill(victim)
            time.sleep(3)
            cluster.start_node(victim)

        data, output, delay = paced_run(tmp_path, run_env(KAFKA_BOOTSTRAP=cluster.bootstrap), kill_one)
    assert_same(data, expected, f"{delay:.2f} s after the first decision, broker {victim}")


def test_two_workers_share_the_partitions_and_one_takes_over_from_the_other(tmp_path, expected):
    """Two worker processes split the partitions (one consumer group); one is killed and the other takes its
    partitions over from their checkpoints until the killed one is replaced."""
    data, output, delay = paced_run(tmp_path, run_env(), kill_worker, config="workers = 2\n" + CONFIG)
    assert "worker exited with code -9; starting a new one" in output
    assert_same(data, expected, f"{delay:.2f} s after the first decision")
