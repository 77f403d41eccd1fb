"""`papertape export`: fills, orders, order events, positions, equity, decisions, funding and metrics as files, one
per table (the ClickHouse views of those names), CSV (CSVWithNames) or Parquet, of some sessions and a time window.

ClickHouse writes each file itself (`SELECT ... FORMAT Parquet`), ordered by session, time and id (metrics: by
session, symbol and period); the window (--from, --to] applies to `ts`.

Metrics are the exception when a window is given: the stored rows are the whole run's, so the window's are computed
(papertape.app.performance.compute, as `papertape metrics --from --to` does) and written here, with the columns of
the `metrics` table less `version`: Parquet by pyarrow, in the types ClickHouse gives the stored rows; CSV by the
csv module, NULL (\\N), times (`2024-08-08 23:54:20.053`) and decimals as ClickHouse writes them, floats as Python
does (`1e-05` where ClickHouse writes `0.00001`: the same value read back).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from infra.archive import Archive, NoHistory, ms, sql_string
from infra.history import check_sessions
from papertape.app.performance import compute, parse_time
from papertape.config import Settings
from papertape.core.metrics.summary import MetricsRow
from streams.sinks.metrics import METRICS_COLUMNS, table_row

TABLES = ("fills", "orders", "order_events", "positions", "equity", "decisions", "funding", "metrics")
FORMATS = {"csv": "CSVWithNames", "parquet": "Parquet"}
WINDOW_METRICS_COLUMNS = [c for c in METRICS_COLUMNS if c != "version"]


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which rows: of these sessions (None: every one), with `ts` in (from_ts, to_ts] (None: unbounded)."""

    sessions: list[str] | None
    from_ts: int | None
    to_ts: int | None

    @property
    def windowed(self) -> bool:
        return self.from_ts is not None or self.to_ts is not None

    def where(self, timed: bool = True) -> str:
        terms = []
        if self.sessions:
            terms.append(f"session IN ({', '.join(sql_string(s) for s in self.sessions)})")
        if timed and self.from_ts is not None:
            terms.append(f"{ms('ts')} > {self.from_ts}")
        if timed and self.to_ts is not None:
            terms.append(f"{ms('ts')} <= {self.to_ts}")
        return f"WHERE {' AND '.join(terms)}" if terms else ""


def chosen_tables(names: list[str] | None) -> list[str]:
    unknown = [n for n in names or [] if n not in TABLES]
    if unknown:
        raise ValueError(f"no table {', '.join(unknown)} to export (known: {', '.join(TABLES)})")
    return list(dict.fromkeys(names)) if names else list(TABLES)


def table_sql(table: str, selection: Selection) -> str:
    if table == "metrics":
        return f"SELECT * FROM metrics {selection.where(timed=False)} ORDER BY session, symbol, period_ms"
    return f"SELECT * FROM {table} {selection.where()} ORDER BY session, ts, id"


def export_table(archive: Archive, settings: Settings, table: str, selection: Selection, fmt: str) -> bytes:
    if table == "metrics" and selection.windowed:
        rows = sorted(compute(archive.query, settings, selection.sessions, selection.from_ts, selection.to_ts),
                      key=lambda r: (r.session, r.symbol, r.period_ms))
        if fmt == "parquet":
            return window_metrics_parquet(archive, rows)
        return window_metrics_csv(rows)
    return archive.raw(table_sql(table, selection), FORMATS[fmt])


def window_metrics_cells(row: MetricsRow) -> dict[str, Any]:
    """The row as the `metrics` table holds it (times as UTC datetimes, money at its 18 decimals), less `version`
    (the stored rows' only: what the row was computed from)."""
    cells = dict(zip(METRICS_COLUMNS, table_row(row, version=0)))
    return {c: cells[c] for c in WINDOW_METRICS_COLUMNS}


def window_metrics_parquet(archive: Archive, rows: list[MetricsRow]) -> bytes:
    # The schema of the stored rows' Parquet, so both read back in the same types.
    schema = pq.read_schema(io.BytesIO(archive.raw("SELECT * EXCEPT (version) FROM metrics LIMIT 0", "Parquet")))
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([window_metrics_cells(r) for r in rows], schema=schema), out)
    return out.getvalue()


def window_metrics_csv(rows: list[MetricsRow]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(WINDOW_METRICS_COLUMNS)
    writer.writerows([csv_text(v) for v in window_metrics_cells(r).values()] for r in rows)
    return out.getvalue().encode()


def csv_text(value: Any) -> str:
    """A value as ClickHouse's CSV writes it."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return str(value)


def count_rows(data: bytes, fmt: str) -> int:
    if fmt == "parquet":
        return pq.read_metadata(io.BytesIO(data)).num_rows
    return sum(1 for _ in csv.reader(io.StringIO(data.decode(errors="replace")))) - 1  # less the header


def write_files(archive: Archive, settings: Settings, tables: list[str], selection: Selection, fmt: str,
                out: Path) -> int:
    """Each table's file in `out`, a line about it printed; returns the rows written."""
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for table in tables:
        path = out / f"{table}.{fmt}"
        data = export_table(archive, settings, table, selection, fmt)
        path.write_bytes(data)
        rows = count_rows(data, fmt)
        print(f"{table:<13} {rows:>9} rows  {path}")
        total += rows
    return total


def main(args: Any, settings: Settings) -> int:
    try:
        tables = chosen_tables(args.tables)
        selection = Selection(args.session, parse_time(args.from_) if args.from_ else None,
                              parse_time(args.to) if args.to else None)
        with Archive(settings.data_dir, settings.clickhouse_url) as archive:
            check_sessions(archive.query, selection.sessions)
            total = write_files(archive, settings, tables, selection, args.format, Path(args.out))
    except (NoHistory, ValueError, OSError) as exc:  # OSError: the directory cannot be written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{total} rows in {len(tables)} files in {args.out}")
    return 0
