"""Issue 19's security checks, on real runs: no secret in any log, topic, table, report or export; every port a run
or the API opens is on loopback by default; `papertape sql` (and every reader of the archive) cannot write it;
orders on Bybit mainnet are refused before anything is sent without the setting and the flag.

Fake secrets go everywhere papertape reads one: the API token (environment and file), the webhook URL, alert
channels' URLs (inline in the config, in an environment variable, in a file), the CoinGecko key, Bybit's key and
secret. A CLICKHOUSE_URL password has no place here: the run's archive is the embedded chdb, which has no users."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

import alert_servers as srv
from builders import free_port, papertape, papertape_cmd, query_rows, run_env, scan_for_secrets
from bybit_private_server import BybitPrivate
from infra.archive import Archive
from infra.sql_endpoint import running

ENV_SECRETS = {"PAPERTAPE_API_TOKEN": "pt-sec-api-token-3e9d1c", "COINGECKO_API_KEY": "CG-sec-coingecko-4b7a2f",
               "BYBIT_API_KEY": "pt-sec-bybit-key-81c4", "BYBIT_API_SECRET": "pt-sec-bybit-secret-a9e07d"}
FILE_TOKEN = "pt-sec-token-file-5d20be"
HOOKS = {"webhook": "pt-sec-webhook-0c6f3e", "inline": "pt-sec-inline-77b1a0", "env": "pt-sec-url-env-e2c95d",
         "file": "pt-sec-url-file-1f8a64"}  # a channel -> the secret in its URL's path
SECRETS = [*ENV_SECRETS.values(), FILE_TOKEN, *HOOKS.values()]
WRITES = ["INSERT INTO fills_log (id, session) VALUES ('pt-sec-intruder', 'x')", "DROP TABLE md_trades_log",
          "ALTER TABLE md_trades_log DELETE WHERE 1", "TRUNCATE TABLE equity_log"]


def config(hook: srv.StandIn, url_file: Path) -> str:
    return f"""
md_partitions = 1
session_partitions = 2

[alerts]
aggregate_s = 0

[[alerts.rules]]
id = "btc-up"
symbol = "BTCUSDT"
above = "61805"
severity = "warning"

[[alerts.channels]]
name = "inline"
url = "{hook.url}/inline/{HOOKS['inline']}"
min_severity = "info"

[[alerts.channels]]
name = "env"
url_env = "PT_SEC_ALERT_URL"
min_severity = "info"

[[alerts.channels]]
name = "file"
url_file = "{url_file}"
min_severity = "info"
"""


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(p := todo.pop())
        todo += children.get(p, [])
    return tree


def listening(pid: int) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """The TCP addresses `pid` and its descendants listen on (read from /proc: the kernel's own view)."""
    inodes = set()
    for p in process_tree(pid):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                hex_ip, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_ip)  # 32-bit words in host (little-endian) order
                ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
                found.add((ip, int(hex_port, 16)))
    return found


def is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def refusal(query) -> str:
    try:
        query()
    except Exception as exc:  # SqlError (the endpoint) or clickhouse-connect's DatabaseError (chdb)
        return str(exc)
    return "accepted"


@pytest.fixture(scope="module")
def secure_run(tmp_path_factory):
    """`papertape run` (its own embedded Kafka, 30 s of the bundled tape at 3x) with every secret set, watched from
    outside: the sockets its processes listen on, the ports it says it serves, and writes tried through its SQL
    endpoint while it runs."""
    root = tmp_path_factory.mktemp("secure_run")
    hook = srv.webhook()
    url_file = root / "alert-url"
    url_file.write_text(f"{hook.url}/file/{HOOKS['file']}\n")
    token_file = root / "api-token"
    token_file.write_text(FILE_TOKEN + "\n")
    cfg = root / "papertape.toml"
    cfg.write_text(config(hook, url_file))
    data = root / "data"
    env = run_env(own_broker=True, **ENV_SECRETS, PAPERTAPE_API_TOKEN_FILE=str(token_file),
                  PAPERTAPE_WEBHOOK_URL=f"{hook.url}/webhook/{HOOKS['webhook']}",
                  PT_SEC_ALERT_URL=f"{hook.url}/env/{HOOKS['env']}")
    proc = subprocess.Popen(papertape_cmd("run", "--config", str(cfg), "--data-dir", str(data), "--seconds", "30",
                                          "--speed", "3"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    listeners: set = set()
    served: dict[str, int] = {}  # what the run says it serves -> port
    endpoint_writes: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            listeners |= listening(proc.pid)
            if info := running(data):
                served["sql endpoint"] = info["sql_port"]
                served["kafka"] = int(info["bootstrap"].rsplit(":", 1)[1])
                if not endpoint_writes:  # through the run's SQL endpoint, as `papertape sql` during a run
                    with Archive(data) as archive:
                        endpoint_writes = {sql: refusal(lambda sql=sql: archive.query(sql)) for sql in WRITES}
            for file in (data / "prometheus").glob("*.json"):
                try:
                    served[f"metrics of {file.stem}"] = httpx.URL(json.loads(file.read_text())["url"]).port or 0
                except (OSError, ValueError):
                    pass  # being written
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        hook.close()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return SimpleNamespace(root=root, data=data, out=out, err=err, listeners=listeners, served=served,
                           endpoint_writes=endpoint_writes, hook=hook, token_file=token_file)


@pytest.mark.slow
def test_no_secret_reaches_a_log_topic_table_report_or_export(secure_run):
    run = secure_run
    # each secret was read and used: the price alert reached every channel at its secret URL
    paths = {r.path for r in run.hook.received()}
    assert {p.split("/")[1] for p in paths} == set(HOOKS), paths
    assert all(f"/{name}/{secret}" in paths for name, secret in HOOKS.items()), paths
    report, export = run.root / "report.html", run.root / "export"
    outputs = run.out + run.err
    for args in (("report", "--out", str(report)), ("export", str(export))):
        r = papertape(*args, "--data-dir", str(run.data))
        assert r.returncode == 0, r.stderr
        outputs += r.stdout + r.stderr
    assert report.stat().st_size > 0 and list(export.iterdir())
    assert (run.data / "kafka").is_dir()  # the broker's segments are in the data directory, scanned with it
    leaks = scan_for_secrets(run.data, outputs, SECRETS, also=[report, export])
    assert leaks == [], leaks


@pytest.mark.slow
def test_every_port_of_a_run_and_the_api_is_on_loopback(secure_run):
    run = secure_run
    ports = {port for _, port in run.listeners}
    # not vacuous: the SQL endpoint, the broker and the metrics of the supervisor and of its worker were seen
    assert set(run.served) == {"sql endpoint", "kafka", "metrics of supervisor", "metrics of worker-0"}, run.served
    assert set(run.served.values()) <= ports, (run.served, run.listeners)
    assert [a for a in run.listeners if not is_loopback(a[0])] == [], run.listeners

    # the API on the ended run's archive: no broker to join (the suite's has none of its topics: 20 s to give up)
    env = {k: v for k, v in os.environ.items() if k not in ("PAPERTAPE_API_TOKEN", "KAFKA_BOOTSTRAP")}
    env["PAPERTAPE_API_TOKEN_FILE"] = str(run.token_file)
    port = free_port()
    api = subprocess.Popen(papertape_cmd("api", "--port", str(port), "--data-dir", str(run.data)), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (found := listening(api.pid)):
            assert api.poll() is None and time.monotonic() < deadline, api.communicate()[0]
            time.sleep(0.1)
        assert found == {(ipaddress.ip_address("127.0.0.1"), port)}, found  # its one socket, on loopback
        url = f"http://127.0.0.1:{port}/api/v1/sessions"
        assert httpx.get(url, timeout=30).status_code == 401
        sessions = httpx.get(url, timeout=30, headers={"Authorization": f"Bearer {FILE_TOKEN}"})
        assert sessions.status_code == 200 and sessions.json()  # its reads go through the read-only archive
    finally:
        api.send_signal(signal.SIGINT)
        out = api.communicate(timeout=30)[0]
    assert [s for s in SECRETS if s in out + sessions.text] == []


@pytest.mark.slow
def test_papertape_sql_cannot_write_the_archive(secure_run):
    run = secure_run
    # during the run, through its SQL endpoint: each refused by ClickHouse in readonly mode
    assert run.endpoint_writes.keys() == set(WRITES), run.endpoint_writes
    assert all("readonly" in why.lower() for why in run.endpoint_writes.values()), run.endpoint_writes
    counts = "SELECT (SELECT count() FROM md_trades_log), (SELECT count() FROM equity_log), " \
             "(SELECT count() FROM fills_log WHERE id = 'pt-sec-intruder') SETTINGS join_use_nulls = 1"  # a reader's
    before = query_rows(run.data, {"n": counts})["n"]
    assert before[0][0] > 0 and before[0][1] > 0 and before[0][2] == 0  # nothing written during the run either
    # after it, on the embedded chdb itself
    for sql in WRITES:
        r = papertape("sql", "--data-dir", str(run.data), sql)
        assert r.returncode == 1 and "readonly" in r.stderr.lower(), (sql, r.stdout, r.stderr)
    assert query_rows(run.data, {"n": counts})["n"] == before
    r = papertape("sql", "--data-dir", str(run.data), "SELECT 1 SETTINGS readonly = 0")
    assert r.returncode == 1 and "readonly" in r.stderr.lower()


def test_a_mainnet_session_without_the_flag_is_refused_before_anything_is_sent(tmp_path):
    bybit = BybitPrivate(ENV_SECRETS["BYBIT_API_KEY"], ENV_SECRETS["BYBIT_API_SECRET"])
    cfg = tmp_path / "papertape.toml"
    cfg.write_text(f"""
md_partitions = 1
session_partitions = 1

[bybit_trading]
environment = "mainnet"
allow_mainnet = true
rest_url = "{bybit.url}"
ws_url = "{bybit.ws_url}"

[[sessions]]
id = "m"
venue = "bybit_mainnet"
""")
    try:
        r = subprocess.run(papertape_cmd("run", "--config", str(cfg), "--data-dir", str(tmp_path / "data"),
                                         "--seconds", "5"), capture_output=True, text=True, timeout=300,
                           env=run_env(BYBIT_API_KEY=ENV_SECRETS["BYBIT_API_KEY"],
                                       BYBIT_API_SECRET=ENV_SECRETS["BYBIT_API_SECRET"]))
    finally:
        bybit.close()
    assert r.returncode == 2 and "allow_mainnet = true and --mainnet" in r.stderr, r.stdout + r.stderr
    assert bybit.requests == [] and bybit.connections == 0  # nothing reached Bybit
    assert [s for s in ENV_SECRETS.values() if s in r.stdout + r.stderr] == []
