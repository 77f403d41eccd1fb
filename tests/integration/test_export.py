"""`papertape export`: each table's file reads back with the rows `papertape sql` gives for the same view, filter and
order (decimals compared as Decimal, times as ms); a window's metrics are `papertape metrics --from --to`'s; wrong
arguments exit 1 and say why. The raw mode of the SQL endpoint (the export's path while a run owns the archive)
against the local one.
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from builders import papertape
from infra.archive import Archive
from infra.sql_endpoint import RUN_FILE, SqlError, query_local_raw, query_remote_raw, serve
from papertape.app.cli import main as cli

TABLES = ["fills", "orders", "order_events", "positions", "equity", "decisions", "funding", "metrics"]
# The tables with rows in the run: nothing is sent to the orders topic, and no funding time falls in its 90 s.
TRADED = {"fills", "order_events", "positions", "equity", "decisions"}
# The scripted session's 2nd fill is at FROM (outside: the window is (FROM, TO]) and its 7th at TO (inside).
FROM, TO = "2024-08-08T23:54:25.075Z", "1723161300056"
IN_WINDOW = ("session = 'script' AND ts > toDateTime64('2024-08-08 23:54:25.075', 3, 'UTC') "
             "AND ts <= toDateTime64('2024-08-08 23:55:00.056', 3, 'UTC')")
WINDOW_ARGS = ("--session", "script", "--from", FROM, "--to", TO)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SLOW = pytest.mark.slow  # ~13 s beyond the shared run: every view through `papertape sql`, four exports


def order_by(table: str) -> str:
    return "session, symbol, period_ms" if table == "metrics" else "session, ts, id"


def exact(value: Any, ch_type: str) -> Any:
    """A cell as compared: decimals as Decimal, times as ms since the epoch, NULL as None."""
    if value is None:
        return None
    if "Decimal" in ch_type:
        return Decimal(value)
    if "DateTime64" in ch_type and not isinstance(value, int):
        t = datetime.fromisoformat(value) if isinstance(value, str) else value
        return (t.replace(tzinfo=t.tzinfo or timezone.utc) - EPOCH) // timedelta(milliseconds=1)
    return value


def from_csv(text: str, ch_type: str) -> Any:
    """A CSV field as the value of its ClickHouse type (decimals and times as text: `exact` reads them)."""
    if text == "\\N" and ch_type.startswith("Nullable("):
        return None
    if "Bool" in ch_type:
        return {"true": True, "false": False}[text]
    if re.search(r"\bU?Int\d+\b", ch_type):
        return int(text)
    if "Float" in ch_type:
        return float(text)
    return text


def sql(data_dir: Path, query: str) -> dict:
    """`papertape sql --json`: {"columns", "types", "rows"}."""
    r = papertape("sql", "--json", "--data-dir", str(data_dir), query)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def export(run, out: Path, *args: str):
    return papertape("export", str(out), *args, "--data-dir", str(run.data_dir), "--config", str(run.config))


@pytest.fixture(scope="module")
def views(archived_run) -> dict[str, dict]:
    """Each view through `papertape sql`, ordered as the export promises: {"columns", "types", "rows", "window"},
    the window's rows (the scripted session's, in (FROM, TO]) picked by ClickHouse in the same query. The columns
    from system.columns: a result without rows has none."""
    described = sql(archived_run.data_dir, "SELECT table, name, type FROM system.columns WHERE database = "
                                           "currentDatabase() ORDER BY table, position")["rows"]
    out = {}
    for table in TABLES:
        window = "0" if table == "metrics" else IN_WINDOW
        result = sql(archived_run.data_dir, f"SELECT *, {window} AS in_window FROM {table} ORDER BY {order_by(table)}")
        columns = [name for t, name, _ in described if t == table]
        types = [type_ for t, _, type_ in described if t == table]
        assert result["columns"] in ([], [*columns, "in_window"])
        rows = [[exact(v, t) for v, t in zip(row, types)] + [row[-1]] for row in result["rows"]]
        out[table] = {"columns": columns, "types": types, "rows": [r[:-1] for r in rows],
                      "window": [r[:-1] for r in rows if r[-1]]}
    return out


@pytest.fixture(scope="module")
def exports(archived_run, tmp_path_factory) -> dict[str, Path]:
    """The directories of four exports: every row as Parquet and as CSV, the window's as Parquet and as CSV."""
    root = tmp_path_factory.mktemp("exports")
    runs = {"parquet": ("--format", "parquet"), "csv": ("--format", "csv"),
            "window.parquet": ("--format", "parquet", *WINDOW_ARGS), "window.csv": ("--format", "csv", *WINDOW_ARGS)}
    for name, args in runs.items():
        r = export(archived_run, root / name, *args)
        assert r.returncode == 0, r.stderr
        assert f"in {len(TABLES)} files" in r.stdout.splitlines()[-1]
    return {name: root / name for name in runs}


def parquet_rows(path: Path, view: dict) -> list[list]:
    table = pq.read_table(path)
    assert table.column_names == view["columns"]
    return [[exact(row[c], t) for c, t in zip(view["columns"], view["types"])] for row in table.to_pylist()]


def csv_rows(path: Path, view: dict) -> list[list]:
    with open(path, newline="") as f:
        header, *rows = csv.reader(f)
    assert header == view["columns"]
    types = dict(zip(view["columns"], view["types"]))
    return [[exact(from_csv(text, types[c]), types[c]) for c, text in zip(header, row)] for row in rows]


@SLOW
def test_the_parquet_files_hold_the_rows_of_each_view(views, exports):
    assert {t for t in TABLES if views[t]["rows"]} >= TRADED | {"metrics"}
    for table in TABLES:
        assert parquet_rows(exports["parquet"] / f"{table}.parquet", views[table]) == views[table]["rows"], table


@SLOW
def test_the_csv_files_hold_the_rows_of_each_view(views, exports):
    for table in TABLES:
        assert csv_rows(exports["csv"] / f"{table}.csv", views[table]) == views[table]["rows"], table


@SLOW
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_session_and_window_export_holds_the_windows_rows(views, exports, fmt):
    read = parquet_rows if fmt == "parquet" else csv_rows
    for table in TABLES[:-1]:
        window = read(exports[f"window.{fmt}"] / f"{table}.{fmt}", views[table])
        assert window == views[table]["window"], table
        whole = {tuple(r) for r in views[table]["rows"]}
        assert {tuple(r) for r in window} <= whole, table
        if table in TRADED:
            assert 0 < len(window) < len(whole), table


def metrics_view_less_version(views) -> dict:
    m = views["metrics"]
    keep = [i for i, c in enumerate(m["columns"]) if c != "version"]
    return {"columns": [m["columns"][i] for i in keep], "types": [m["types"][i] for i in keep]}


@pytest.fixture(scope="module")
def window_metrics(archived_run) -> list[dict]:
    """`papertape metrics --json` of the window, ordered as the export promises."""
    r = papertape("metrics", "--json", *WINDOW_ARGS, "--data-dir", str(archived_run.data_dir),
                  "--config", str(archived_run.config))
    assert r.returncode == 0, r.stderr
    return sorted(json.loads(r.stdout), key=lambda m: (m["session"], m["symbol"], m["period_ms"]))


@SLOW
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_windows_metrics_are_what_papertape_metrics_computes_for_it(views, exports, window_metrics, fmt):
    view = metrics_view_less_version(views)
    expected = [[exact(m[c], t) for c, t in zip(view["columns"], view["types"])] for m in window_metrics]
    read = parquet_rows if fmt == "parquet" else csv_rows
    exported = read(exports[f"window.{fmt}"] / f"metrics.{fmt}", view)
    assert exported == expected
    assert len(exported) >= 3
    window = [(row[view["columns"].index("from_ts")], row[view["columns"].index("to_ts")]) for row in exported]
    assert set(window) == {(1723161265075, int(TO))}  # the window's rows, not the stored whole run's


def test_the_windows_metrics_have_the_stored_metrics_parquet_types(exports):
    stored = pq.read_schema(exports["parquet"] / "metrics.parquet")
    stored = stored.remove(stored.get_field_index("version"))
    assert pq.read_schema(exports["window.parquet"] / "metrics.parquet") == stored


def test_an_unknown_session_exits_1_and_says_which_there_are(archived_run, tmp_path):
    r = export(archived_run, tmp_path / "out", "--session", "script", "--session", "nobody")
    assert r.returncode == 1
    assert "no session 'nobody' in the archive (it has: fast, revert, script)" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (("--tables", "fills", "trades"), "no table trades to export (known: fills, orders, order_events, positions, "
                                      "equity, decisions, funding, metrics)"),
    (("--from", "yesterday"), "not a time: 'yesterday'"),
    ((), "no history in"),
], ids=["unknown-table", "bad-time", "no-history"])
def test_wrong_arguments_exit_1_and_say_why(tmp_path, capsys, args, message):
    """Found before the archive is opened (there is none here), so in this process."""
    assert cli(["export", str(tmp_path / "out"), *args, "--data-dir", str(tmp_path / "data")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


QUERY = "SELECT number AS n, toDecimal128(number, 18) / 3 AS third, toDateTime64(number, 3, 'UTC') AS t FROM numbers(5)"


async def test_the_sql_endpoint_writes_native_formats_as_the_local_client_does(ch, tmp_path):
    runner, port = await serve(ch)
    try:
        remote = await asyncio.to_thread(query_remote_raw, port, QUERY, "Parquet")
        assert remote == await asyncio.to_thread(query_local_raw, ch, QUERY, "Parquet")
        assert pq.read_table(io.BytesIO(remote)).column("third").to_pylist()[2] == Decimal("0.666666666666666666")
        assert (await asyncio.to_thread(query_remote_raw, port, QUERY, "CSVWithNames")).startswith(b'"n","third","t"\n')
        with pytest.raises(SqlError, match="UNKNOWN_TABLE"):
            await asyncio.to_thread(query_remote_raw, port, "SELECT * FROM nowhere", "Parquet")
        # A data directory a run owns (this process, here) is read through that run's endpoint.
        owned = tmp_path / "owned"
        owned.mkdir()
        (owned / RUN_FILE).write_text(json.dumps({"pid": os.getpid(), "sql_port": port}))
        with Archive(owned) as archive:
            assert await asyncio.to_thread(archive.raw, QUERY, "Parquet") == remote
    finally:
        await runner.cleanup()
