"""`papertape session ...` on real components: a control reaches the embedded broker, migration 003 upgrades an
old archive, and list/show read a real chdb archive."""
from __future__ import annotations

import asyncio
import json
from decimal import Decimal as D

from aiokafka import AIOKafkaConsumer

import schemas as s
from builders import TS, decision, status
from infra.broker import ensure_topics
from infra.clickhouse import MIGRATIONS_DIR, connect, migrate, split_statements
from infra.tansu import EmbeddedTansu
from papertape.app.cli import main
from streams.sinks.rows import COLUMNS, rows_for


def test_migration_003_upgrades_an_archive_of_002(tmp_path):
    """A data directory made by 001 and 002: 003 adds the decision columns (an old decision reads NULL) and the
    sessions table, the views show them, and every 003 statement can run again."""
    before = tmp_path / "migrations"
    before.mkdir()
    for name in ("001_init.sql", "002_venue.sql"):
        (before / name).write_text((MIGRATIONS_DIR / name).read_text())
    client = connect(None, tmp_path)
    try:
        assert migrate(client, before) == [1, 2]
        old_columns = [c for c in COLUMNS["decisions_log"] if c not in ("risk_score", "opportunity_score", "intel")]
        client.insert("decisions_log", [("d0", TS, "old", "BTCUSDT", "hold", "flat", 0.25, "{}", None)],
                      column_names=old_columns)
        assert migrate(client) == [3, 4, 5, 6]
        for statement in split_statements((MIGRATIONS_DIR / "003_sessions.sql").read_text()):
            client.command(statement)  # a partly applied 003 runs again from its top
        assert migrate(client) == []
        for table in ("decisions_log", "sessions_log"):
            for name in (table, table.removesuffix("_log")):
                assert tuple(r[0] for r in client.query(f"DESCRIBE TABLE {name}").result_rows) == COLUMNS[table]
        new = rows_for("decisions", decision(1)) + rows_for("sessions", status(1, TS, "running", "started"))
        for table, row in new:
            client.insert(table, [row], column_names=list(COLUMNS[table]))
        assert client.query("SELECT id, confidence, risk_score, opportunity_score, intel FROM decisions ORDER BY id"
                            ).result_rows == [("d0", 0.25, None, None, None), ("rt-1:d", 0.75, 0.125, 0.5, 7)]
        assert client.query("SELECT session, status, intel, JSONExtractInt(config, 'risk', 'max_daily_trades') "
                            "FROM sessions").result_rows == [("rt", "running", 7, 3)]
        comment = client.query("SELECT comment FROM system.columns WHERE database = currentDatabase() "
                               "AND table = 'decisions_log' AND name = 'action'").result_rows[0][0]
        assert comment == "buy | sell | hold | blocked | reject | cancel | amend"
    finally:
        client.close()


def test_start_reaches_the_embedded_broker(no_env, tmp_path, monkeypatch, capsys):
    """The control as a consumer of `control` reads it: keyed by session, with the schema's JSON (Tansu has no
    idempotent producer: the CLI's producer must not ask for one)."""

    async def read(bootstrap: str) -> list:
        consumer = AIOKafkaConsumer("control", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=100)
        await consumer.start()
        try:
            got = await consumer.getmany(timeout_ms=5000)
            return [(r.key, s.decode("control", r.value)) for records in got.values() for r in records]
        finally:
            await consumer.stop()

    with EmbeddedTansu(tmp_path / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, s.partition_counts(1, 2)))
        monkeypatch.setenv("KAFKA_BOOTSTRAP", broker.bootstrap)
        assert main(["session", "start", "rt", "--data-dir", str(tmp_path), "--intel", "2"]) == 0
        [(key, ctrl)] = asyncio.run(read(broker.bootstrap))
    assert key == b"rt" and ctrl.command == "start" and ctrl.config == {"intel": 2}
    assert f"({ctrl.id} on {broker.bootstrap})" in capsys.readouterr().out


# --- list and show on a real archive --------------------------------------------------------------------------

def equity(session: str, ts: int, value: str, cash: str, open_positions: int = 0) -> s.Equity:
    return s.Equity(id=f"{session}:eq:{ts}", ts=ts, session=session, cash=D(cash), equity=D(value),
                    realized_pnl=D(0), unrealized_pnl=D(value) - D(cash), fees=D("1.5"), open_positions=open_positions)


def position(session: str, n: int, ts: int, symbol: str, qty: str) -> s.Position:
    return s.Position(id=f"{session}-{n}:o:f{n}:p", ts=ts, session=session, symbol=symbol, qty=D(qty),
                      avg_price=D("61000.5") if D(qty) else None, mark=D("61010"), realized_pnl=D(0),
                      unrealized_pnl=D(0))


def fill(session: str, n: int) -> s.Fill:
    return s.Fill(id=f"{session}-{n}:o:f{n}", ts=TS + n, session=session, order_id=f"{session}-{n}:o",
                  symbol="BTCUSDT", side="buy", price=D("61000.5"), qty=D("0.01"), liquidity="taker",
                  fee_rate=D("0.00055"), fee=D("0.33550275"), realized_pnl=D(0))


def archive(tmp_path) -> None:
    """Two sessions: `rt` started at run time (status rows, with two changes in one event time: the later has
    the higher number, `:status:10` after `:status:9`), and `old` from a run before sessions (equity only)."""
    client = connect(None, tmp_path)
    try:
        migrate(client)
        messages = [
            ("sessions", status(8, TS, "running", "started")),
            ("sessions", status(9, TS + 60_000, "running", "circuit breaker tripped: daily_trades",
                                {"daily_trades": "3 orders today (limit 3)"})),
            ("sessions", status(10, TS + 60_000, "paused", "paused: no new entries",
                                {"daily_trades": "3 orders today (limit 3)"}, intel=8)),
            ("equity", equity("rt", TS, "5000", "5000")),
            ("equity", equity("rt", TS + 60_000, "5012.25", "4998.5", 1)),
            ("equity", equity("old", TS + 30_000, "10000", "10000")),
            ("equity", equity("old", TS + 90_000, "9990.123456789", "9990.123456789")),
            # positions: BTCUSDT open after two fills in one event time (f10 after f9), ETHUSDT closed
            ("positions", position("rt", 9, TS + 5000, "BTCUSDT", "0.5")),
            ("positions", position("rt", 10, TS + 5000, "BTCUSDT", "0.01")),
            ("positions", position("rt", 11, TS + 6000, "ETHUSDT", "1")),
            ("positions", position("rt", 12, TS + 7000, "ETHUSDT", "0")),
            ("fills", fill("rt", 1)), ("fills", fill("rt", 2)), ("fills", fill("old", 1)),
            *[("decisions", decision(n)) for n in range(1, 13)],
            ("decisions", decision(13, action="blocked", reasoning="circuit breaker: daily_trades", confidence=0.9,
                                   risk_score=None, opportunity_score=None)),
        ]
        for topic, message in messages:
            for table, row in rows_for(topic, message):
                client.insert(table, [row], column_names=list(COLUMNS[table]))
    finally:
        client.close()  # the CLI opens the data directory itself


def test_list_and_show_read_the_archive(no_env, tmp_path, capsys):
    archive(tmp_path)
    assert main(["session", "list", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["session", "status", "strategy", "intel", "equity", "cash", "open_positions", "fills",
                                "decisions", "breakers", "as_of"]
    assert lines[2].split() == ["old", "NULL", "NULL", "NULL", "9990.12345679", "9990.12345679", "0", "1", "0",
                                "2024-08-09", "00:01:30.000"]
    assert lines[3].split() == ["rt", "paused", "ema_cross", "8", "5012.25000000", "4998.50000000", "1", "2", "13",
                                "daily_trades", "2024-08-09", "00:01:00.000"]
    assert lines[-1] == "(2 rows)"

    assert main(["session", "list", "--data-dir", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)  # as `papertape sql --json` prints a result
    assert [dict(zip(listed["columns"], row)) for row in listed["rows"]] == [
        {"session": "old", "status": None, "strategy": None, "intel": None, "equity": "9990.123456789",
         "cash": "9990.123456789", "open_positions": 0, "fills": 1, "decisions": 0, "breakers": [],
         "as_of": "2024-08-09 00:01:30.000"},
        {"session": "rt", "status": "paused", "strategy": "ema_cross", "intel": 8, "equity": "5012.25",
         "cash": "4998.5", "open_positions": 1, "fills": 2, "decisions": 13, "breakers": ["daily_trades"],
         "as_of": "2024-08-09 00:01:00.000"}]
    assert len(listed["types"]) == len(listed["columns"])

    assert main(["session", "show", "rt", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split() == ["rt", "paused", "paused:", "no", "new", "entries", "ema_cross", "8",
                                           "5012.25000000", "4998.50000000", "1.50000000", "2024-08-09",
                                           "00:01:00.000"]
    assert "  daily_trades: 3 orders today (limit 3)" in out
    assert '"max_daily_trades": 3' in out  # the config, pretty
    positions = out.split("positions:\n")[1].split("\n\n")[0].splitlines()
    assert positions[2].split() == ["BTCUSDT", "0.01", "61000.5", "61010", "0.00000000", "0.00000000", "2024-08-09",
                                    "00:00:05.000"]
    assert positions[-1] == "(1 row)"  # ETHUSDT is closed
    decisions = out.split("last decisions:\n")[1].splitlines()
    assert len(decisions) == 2 + 10 + 1  # the last 10, oldest first
    assert decisions[2].split()[:7] == ["2024-08-09", "00:00:04.000", "BTCUSDT", "buy", "0.75", "0.125", "0.5"]
    assert decisions[11].split()[:7] == ["2024-08-09", "00:00:13.000", "BTCUSDT", "blocked", "0.9", "NULL", "NULL"]

    assert main(["session", "show", "old", "--data-dir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] is None and shown["config"] is None and shown["positions"] == []
    assert shown["equity"]["equity"] == "9990.123456789"
    assert main(["session", "show", "rt", "--data-dir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"]["status"] == "paused" and shown["status"]["intel"] == 8
    assert shown["breakers"] == {"daily_trades": "3 orders today (limit 3)"}
    assert shown["config"]["risk"] == {"max_daily_trades": 3}
    assert [d["reasoning"] for d in shown["decisions"]] == [f"decision {n}" for n in range(4, 13)] + [
        "circuit breaker: daily_trades"]
    assert main(["session", "show", "nobody", "--data-dir", str(tmp_path)]) == 1
    assert "no session 'nobody' in the history" in capsys.readouterr().err


def test_list_without_history(no_env, tmp_path, capsys):
    assert main(["session", "list", "--data-dir", str(tmp_path / "none")]) == 1
    assert "no history in" in capsys.readouterr().err
