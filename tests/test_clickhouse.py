"""Embedded ClickHouse (chdb): migrations, dedupe views, exact decimals, the SQL endpoint."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from infra.clickhouse import connect, migrate, migration_files, split_statements
from infra.sql_endpoint import format_table, query_local, query_remote, serve
from schemas import Fill
from streams.recorder import COLUMNS, rows_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ch(tmp_path):
    client = connect(None, tmp_path)
    migrate(client)
    yield client
    client.close()  # chdb opens one data directory per process: release it for the next test


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
    assert ch.query("SELECT version, name FROM schema_migrations").result_rows == [(1, "001_init")]
    tables = {r[0] for r in ch.query("SHOW TABLES").result_rows}
    for log_table in COLUMNS:
        assert {log_table, log_table.removesuffix("_log")} <= tables


def test_tables_match_recorder_columns(ch):
    for table, columns in COLUMNS.items():
        described = [r[0] for r in ch.query(f"DESCRIBE TABLE {table}").result_rows]
        assert tuple(described) == columns, table
        engine = ch.query(f"SELECT engine FROM system.tables WHERE name = '{table}'").result_rows[0][0]
        assert engine == "ReplacingMergeTree"
    money = ch.query("SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
                     "AND (type LIKE '%Float%' OR name = 'ts')").result_rows
    for table, name, type_ in money:
        assert name in ("confidence", "ts"), (table, name, type_)  # floats only for ratios
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
    from schemas import MarketFrame, Trade

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
