"""Embedded ClickHouse (chdb): migrations, dedupe views, exact decimals, the SQL endpoint."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from decimal import Decimal

import httpx
import pytest

from builders import ROOT
from infra.clickhouse import MIGRATIONS_DIR, connect, migrate, migration_files, split_statements
from infra.sql_endpoint import query_local, query_remote, serve
from papertape.app.formatting import format_table
from papertape.core.metrics.definitions import DEFINITIONS
from schemas import AmendOrder, CancelOrder, Equity, Fill, Funding, MarketFrame, Order, OrderEvent, Trade
from streams.sinks.rows import COLUMNS, rows_for


def fill(id: str = "f1", fee: str = "0.0000337") -> Fill:
    return Fill(id=id, ts=1_700_000_000_123, session="s1", order_id="o1", symbol="BTCUSDT", side="buy",
                price=Decimal("37000.5"), qty=Decimal("0.001"), liquidity="taker", fee_rate=Decimal("0.00055"),
                fee=Decimal(fee), realized_pnl=Decimal("0"))


def insert(client, topic, *models):
    for model in models:
        for table, row in rows_for(topic, model):
            client.insert(table, [row], column_names=list(COLUMNS[table]))


def count(client, table: str) -> int:
    return client.query(f"SELECT count() FROM {table}").result_rows[0][0]


def test_migrate_is_idempotent(ch):
    assert migrate(ch) == []
    assert ch.query("SELECT version, name FROM schema_migrations ORDER BY version").result_rows == [
        (1, "001_init"), (2, "002_venue"), (3, "003_sessions"), (4, "004_metrics"), (5, "005_alerts"),
        (6, "006_exchange")]
    tables = {r[0] for r in ch.query("SHOW TABLES").result_rows}
    for log_table in COLUMNS:
        assert {log_table, log_table.removesuffix("_log")} <= tables


def test_tables_match_recorder_columns(ch):
    for table, columns in COLUMNS.items():
        described = [r[0] for r in ch.query(f"DESCRIBE TABLE {table}").result_rows]
        assert tuple(described) == columns, table
        view = [r[0] for r in ch.query(f"DESCRIBE TABLE {table.removesuffix('_log')}").result_rows]
        assert tuple(view) == columns, table
        engine = ch.query(f"SELECT engine FROM system.tables WHERE name = '{table}'").result_rows[0][0]
        assert engine == "ReplacingMergeTree"
    money = ch.query("SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
                     "AND (type LIKE '%Float%' OR name = 'ts')").result_rows
    for table, name, type_ in money:
        if table in ("metrics", "metrics_log"):  # ratios and lengths of time; money is Decimal there too
            assert DEFINITIONS[name][0] in ("percent", "ratio", "duration"), (table, name, type_)
            continue
        # ratios only (a price error in basis points is a ratio too)
        assert name in ("confidence", "risk_score", "opportunity_score", "price_error_bps", "ts"), (table, name, type_)
        if name == "ts":
            assert type_ == "DateTime64(3, 'UTC')"


def test_partly_applied_migrations_continue(tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_a.sql").write_text("CREATE TABLE IF NOT EXISTS a (x Int8) ENGINE = MergeTree ORDER BY x;")
    (migrations / "002_b.sql").write_text(
        "-- a comment; with a semicolon\nCREATE TABLE IF NOT EXISTS b (s String DEFAULT 'x;y') "
        "ENGINE = MergeTree ORDER BY s;\nINSERT INTO missing_table VALUES (1);")
    client = connect(None, tmp_path)
    try:
        with pytest.raises(RuntimeError, match="002_b.sql"):
            migrate(client, migrations)
        assert [r[0] for r in client.query("SELECT version FROM schema_migrations").result_rows] == [1]
        (migrations / "002_b.sql").write_text(
            "CREATE TABLE IF NOT EXISTS b (s String DEFAULT 'x;y') ENGINE = MergeTree ORDER BY s;\n"
            "INSERT INTO b (s) VALUES ('ok');")
        assert migrate(client, migrations) == [2]
        assert migrate(client, migrations) == []
        assert client.query("SELECT s FROM b").result_rows == [("ok",)]
    finally:
        client.close()


TS = 1_700_000_000_123
D = Decimal

# Rows as 001_init.sql made them, before 002_venue.sql added columns.
COLUMNS_001 = {
    "orders_log": COLUMNS["orders_log"][:10],
    "order_events_log": tuple(c for c in COLUMNS["order_events_log"] if c != "trigger_price"),
    "fills_log": COLUMNS["fills_log"][:-2],
    "equity_log": tuple(c for c in COLUMNS["equity_log"] if c != "funding"),
}
ROWS_001 = {
    "orders_log": ("o1", TS, "s1", "BTCUSDT", "buy", "limit", D("0.5"), D("36000"), "GTC", False),
    "order_events_log": ("oe1", TS, "s1", "o1", "BTCUSDT", "buy", "limit", "filled", D("0.5"), D("36000"), D("0.5"),
                         D("36000"), ""),
    "fills_log": ("f1", TS, "s1", "o1", "BTCUSDT", "buy", D("36000"), D("0.5"), "maker", D("0.0002"), D("3.6"),
                  D("0"), "USDT"),
    "equity_log": ("e1", TS, "s1", D("9996.4"), D("9996.4"), D("0"), D("0"), D("3.6"), 1),
}


def test_migration_from_001_keeps_rows_and_adds_columns(tmp_path):
    """A data directory made by 001 only, opened again by the current code: 002 applies, old rows stay, and read
    the new columns' defaults; the views show the new columns; every 002 statement can run again."""
    only_001 = tmp_path / "migrations"
    only_001.mkdir()
    (only_001 / "001_init.sql").write_text((MIGRATIONS_DIR / "001_init.sql").read_text())
    client = connect(None, tmp_path)
    try:
        assert migrate(client, only_001) == [1]
        for table, row in ROWS_001.items():
            client.insert(table, [row], column_names=list(COLUMNS_001[table]))
        client.command("INSERT INTO alerts_log VALUES ('a1', '2024-08-09 00:00:00', 'warning', 'market', 'stale', '', "
                       "NULL)")  # an alert of 001's columns, before alerts had a type
        assert [r[0] for r in client.query("DESCRIBE TABLE orders").result_rows] == list(COLUMNS_001["orders_log"])
    finally:
        client.close()

    client = connect(None, tmp_path)  # the existing data directory
    try:
        assert migrate(client) == [2, 3, 4, 5, 6]
        for table, columns in COLUMNS.items():
            for name in (table, table.removesuffix("_log")):
                assert tuple(r[0] for r in client.query(f"DESCRIBE TABLE {name}").result_rows) == columns, name
        old = {table: client.query(f"SELECT * FROM {table.removesuffix('_log')}").result_rows for table in ROWS_001}
        assert old["orders_log"] == [(
            "o1", old["orders_log"][0][1], "s1", "BTCUSDT", "buy", "limit", D("0.5"), D("36000"), "GTC", False,
            None, "last", None, None, None, None, None, None, None)]
        assert old["order_events_log"][0][9:11] == (D("36000"), None)  # price, trigger_price
        assert old["fills_log"][0][-3:] == ("USDT", "trade", "paper")  # settle_coin, exec_type, venue
        assert old["equity_log"][0][-3:] == (D("3.6"), D("0"), 1)  # fees, funding, open_positions
        assert count(client, "funding") == count(client, "order_changes") == 0
        assert client.query("SELECT type FROM alerts").result_rows == [("system",)]  # 005's default for old alerts
        for statement in split_statements((MIGRATIONS_DIR / "002_venue.sql").read_text()):
            client.command(statement)  # a partly applied 002 runs again from its top
        assert migrate(client) == []
        assert client.query("SELECT id, trigger_by FROM orders").result_rows == [("o1", "last")]
        comments = dict(client.query("SELECT name, comment FROM system.columns WHERE database = currentDatabase() "
                                     "AND table = 'order_events_log'").result_rows)
        assert "triggered | expired | amended" in comments["status"]
        assert "trailing_stop" in comments["type"]
        # new rows with every new column, next to the old ones
        insert(client, "orders", venue_order("o2"))
        assert client.query("SELECT id, type, trigger_price, oco FROM orders ORDER BY id").result_rows == [
            ("o1", "limit", None, None), ("o2", "stop_limit", D("36100.5"), "g1")]
    finally:
        client.close()


def venue_order(id: str = "o2") -> Order:
    return Order(id=id, ts=TS, session="s1", symbol="BTCUSDT", side="sell", type="stop_limit", qty=D("0.5"),
                 price=D("36000"), trigger_price=D("36100.5"), trigger_by="mark", expire_ts=TS + 3_600_000, oco="g1")


def test_venue_columns_and_tables_round_trip(ch):
    """Every column 002 added, and its two new tables, through a native insert (the recorder's rows)."""
    common = {"ts": TS, "session": "s1"}
    insert(ch, "orders", venue_order("o1"),
           Order(id="o2", symbol="BTCUSDT", side="sell", type="trailing_stop", qty=D("0.5"), trail_percent=D("2.5"),
                 activation_price=D("38000"), **common),
           Order(id="o3", symbol="BTCUSDT", side="sell", type="trailing_stop", qty=D("0.5"), trail_amount=D("99.9"),
                 **common),
           Order(id="o4", symbol="BTCUSDT", side="buy", type="market", qty=D("0.5"), stop_loss=D("35000"),
                 take_profit=D("40000"), **common),
           CancelOrder(id="c1", order_id="o1", **common),
           AmendOrder(id="a1", order_id="o2", price=D("36001"), **common),
           AmendOrder(id="a1", order_id="o2", price=D("36001"), **common))  # redelivered
    insert(ch, "order.events", OrderEvent(id="oe1", order_id="o1", symbol="BTCUSDT", side="sell", type="stop_limit",
                                          status="expired", qty=D("0.5"), filled_qty=D("0"), price=D("36000"),
                                          trigger_price=D("36100.5"), reason="expired", **common))
    insert(ch, "fills", fill("f1").model_copy(update={"exec_type": "liquidation"}), fill("f2"))
    insert(ch, "funding", Funding(id="fu1", symbol="BTCUSDT", rate=D("-0.000125"), mark=D("37000.5"), qty=D("2"),
                                  amount=D("9.250125"), **common))
    insert(ch, "equity", Equity(id="e1", cash=D("10009.250125"), equity=D("10009.250125"), realized_pnl=D("0"),
                                unrealized_pnl=D("0"), fees=D("0"), funding=D("9.250125"), open_positions=1, **common))
    assert ch.query("SELECT id, trigger_price, trigger_by, trail_amount, trail_percent, activation_price, "
                    "toUnixTimestamp64Milli(expire_ts), oco, stop_loss, take_profit FROM orders ORDER BY id"
                    ).result_rows == [
        ("o1", D("36100.5"), "mark", None, None, None, TS + 3_600_000, "g1", None, None),
        ("o2", None, "last", None, D("2.5"), D("38000"), None, None, None, None),
        ("o3", None, "last", D("99.9"), None, None, None, None, None, None),
        ("o4", None, "last", None, None, None, None, None, D("35000"), D("40000")),
    ]
    assert count(ch, "order_changes_log") == 3
    assert ch.query("SELECT id, toUnixTimestamp64Milli(ts), session, kind, order_id, qty, price, trigger_price "
                    "FROM order_changes ORDER BY id").result_rows == [
        ("a1", TS, "s1", "amend", "o2", None, D("36001"), None), ("c1", TS, "s1", "cancel", "o1", None, None, None)]
    assert ch.query("SELECT status, trigger_price, reason FROM order_events").result_rows == [
        ("expired", D("36100.5"), "expired")]
    assert ch.query("SELECT id, exec_type FROM fills ORDER BY id").result_rows == [("f1", "liquidation"),
                                                                                  ("f2", "trade")]
    assert ch.query("SELECT symbol, rate, mark, qty, amount, settle_coin FROM funding").result_rows == [
        ("BTCUSDT", D("-0.000125"), D("37000.5"), D("2"), D("9.250125"), "USDT")]
    assert ch.query("SELECT cash, funding FROM equity").result_rows == [(D("10009.250125"), D("9.250125"))]


def test_split_statements():
    sql = "/* head; */ SELECT ';' -- x; y\n; SELECT `a;b` FROM t ;; \n-- only a comment;\n"
    assert split_statements(sql) == ["SELECT ';'", "SELECT `a;b` FROM t"]
    assert [v for v, _, _ in migration_files()] == sorted({v for v, _, _ in migration_files()})


def test_view_counts_a_redelivered_fill_once(ch):
    insert(ch, "fills", fill("f1"), fill("f2"))
    insert(ch, "fills", fill("f1"))  # delivered twice, in another insert (another part)
    assert count(ch, "fills_log") == 3
    assert count(ch, "fills") == 2
    assert ch.query("SELECT sum(fee) FROM fills").result_rows[0][0] == Decimal("0.0000674")


def test_decimals_are_exact(ch):
    insert(ch, "fills", fill("f1", fee="0.0000337"), fill("f2", fee="-12345678901234567890.123456789012345678"))
    rows = dict(ch.query("SELECT id, fee FROM fills").result_rows)
    assert rows["f1"] == Decimal("0.0000337")
    assert rows["f2"] == Decimal("-12345678901234567890.123456789012345678")
    assert str(query_local(ch, "SELECT fee FROM fills WHERE id = 'f1'")["rows"][0][0]) == "0.000033700000000000"


def test_second_process_gets_a_clear_error(ch, tmp_path):
    code = textwrap.dedent(f"""
        from pathlib import Path
        from infra.clickhouse import DataDirInUse, connect
        try:
            connect(None, Path({str(tmp_path)!r}))
        except DataDirInUse as exc:
            print("IN USE:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "IN USE:" in out.stdout and "another process" in out.stdout, out.stderr


async def test_sql_endpoint_answers_another_process(ch):
    insert(ch, "fills", fill("f1"), fill("f1"), fill("f2", fee="0.5"))
    runner, port = await serve(ch)
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).json() == {"ok": True}
            bad = await http.post(f"http://127.0.0.1:{port}/sql", content=b"SELECT * FROM nope")
            assert bad.status_code == 400 and "UNKNOWN_TABLE" in bad.text
        code = textwrap.dedent(f"""
            import json
            from infra.sql_endpoint import query_remote, SqlError
            print(json.dumps(query_remote({port}, "SELECT id, fee, ts FROM fills ORDER BY id")))
            try:
                query_remote({port}, "SELEC 1")
            except SqlError as exc:
                print("ERROR", str(exc)[:40])
        """)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        lines = out.decode().splitlines()
        assert proc.returncode == 0, err.decode()
        result = json.loads(lines[0])
        assert result == {
            "columns": ["id", "fee", "ts"],
            "types": ["String", "Decimal(38, 18)", "DateTime64(3, 'UTC')"],
            "rows": [["f1", "0.000033700000000000", "2023-11-14 22:13:20.123000"],
                     ["f2", "0.500000000000000000", "2023-11-14 22:13:20.123000"]],
        }
        assert lines[1].startswith("ERROR") and "Syntax error" in lines[1]
    finally:
        await runner.cleanup()
    with pytest.raises(httpx.ConnectError):
        query_remote(port, "SELECT 1")


def test_format_table(ch):
    insert(ch, "fills", fill("f1"), fill("f22", fee="12.5"))
    text = format_table(query_local(ch, "SELECT id, fee, order_id FROM fills ORDER BY id"))
    assert text.splitlines() == [
        "id                     fee  order_id",
        "---  ---------------------  --------",
        "f1    0.000033700000000000  o1",
        "f22  12.500000000000000000  o1",
        "(2 rows)",
    ]
    assert format_table({"columns": ["x"], "types": ["Nullable(Int64)"], "rows": [[None]]}).endswith("NULL\n(1 row)")
    assert format_table({"columns": ["a", "b"], "rows": [["x", "1"]]}).splitlines()[2] == "x  1"


def test_insert_speed_100k_trades(ch):
    frame_trades = [Trade(ts=1_700_000_000_000 + i, price=str(Decimal("37000.1") + i), qty="0.001",
                          side="buy" if i % 2 else "sell") for i in range(1000)]
    rows = []
    for f in range(100):
        frame = MarketFrame(id=f"bybit:BTCUSDT:{f}", ts=1_700_000_000_000 + f, venue="bybit", symbol="BTCUSDT",
                            recv_ts=0, trades=frame_trades)
        rows += [row for _, row in rows_for("md.events", frame)]
    start = time.perf_counter()
    ch.insert("md_trades_log", rows, column_names=list(COLUMNS["md_trades_log"]))
    elapsed = time.perf_counter() - start
    assert count(ch, "md_trades") == 100_000
    print(f"\ninserted 100k md_trades rows in {elapsed:.2f}s: {100_000 / elapsed:,.0f} rows/s")
