"""`papertape metrics`: each session's performance over a window, computed from the archive the same way the
`metrics` table is (infra.history -> papertape.core.metrics), printed as tables or JSON."""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from infra.archive import Archive, NoHistory
from infra.history import Query, check_sessions, load_history
from papertape.app.formatting import format_table, metric, period, utc_time
from papertape.config import Settings
from papertape.core.metrics.definitions import DEFINITIONS
from papertape.core.metrics.summary import ALL_SYMBOLS, MetricsRow, SessionHistory, session_metrics

SYMBOL_COLUMNS = ("trades", "open_trades", "win_rate", "profit_factor", "expectancy", "best_trade", "worst_trade",
                  "avg_holding_ms", "exposure", "fees", "funding", "cost_vs_decision_bps", "cost_vs_arrival_bps")


def parse_time(text: str) -> int:
    """ms since the epoch, from an integer or ISO 8601 (a date, or a date and time; UTC unless it says)."""
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (give ISO 8601 like 2024-08-08T23:56:00Z, or ms since the epoch)")
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1000)


def load_histories(query: Query, settings: Settings, sessions: list[str] | None = None) -> dict[str, SessionHistory]:
    """Each session's history (every session of the archive when None), at the finest metrics period."""
    return {s: load_history(query, s, settings.metrics.step_ms) for s in check_sessions(query, sessions)}


def compute(query: Query, settings: Settings, sessions: list[str] | None = None, from_ts: int | None = None,
            to_ts: int | None = None, histories: dict[str, SessionHistory] | None = None) -> list[MetricsRow]:
    """The metrics rows of the sessions over the window (of `histories` when they are loaded already)."""
    if histories is None:
        histories = load_histories(query, settings, sessions)
    return [row for h in histories.values()
            for row in session_metrics(h, settings.metrics.periods, from_ts, to_ts)]


def as_json(row: MetricsRow) -> dict[str, Any]:
    """Exact decimals as text, times as ISO 8601 beside their ms."""
    out: dict[str, Any] = {}
    for k, v in dataclasses.asdict(row).items():
        out[k] = f"{v.normalize():f}" if isinstance(v, Decimal) else v
        if DEFINITIONS.get(k, ("",))[0] == "time" or k in ("from_ts", "to_ts"):
            out[k + "_utc"] = utc_time(v) if v is not None else None
    return out


def account_table(rows: list[MetricsRow]) -> dict:
    """One session's account rows (one per period) side by side: a metric per line."""
    names = [n for n in DEFINITIONS]
    return {"columns": ["metric", *[period(r.period_ms) for r in rows]], "types": [],
            "rows": [[n, *[metric(DEFINITIONS[n][0], getattr(r, n)) for r in rows]] for n in names]}


def symbol_table(rows: list[MetricsRow]) -> dict:
    return {"columns": ["symbol", *SYMBOL_COLUMNS], "types": [],
            "rows": [[r.symbol, *[metric(DEFINITIONS[c][0], getattr(r, c)) for c in SYMBOL_COLUMNS]] for r in rows]}


def print_tables(rows: list[MetricsRow]) -> None:
    for session in dict.fromkeys(r.session for r in rows):
        mine = [r for r in rows if r.session == session]
        account = [r for r in mine if r.symbol == ALL_SYMBOLS]
        first = account[0]
        print(f"\nsession {session} ({first.strategy}), {utc_time(first.from_ts)} .. {utc_time(first.to_ts)}")
        print(format_table(account_table(account)))
        symbols = [r for r in mine if r.symbol != ALL_SYMBOLS]
        if symbols:
            print(format_table(symbol_table(symbols)))
    print("\ndefinitions: README.md, \"Metrics\"; the metrics table in ClickHouse: papertape sql \"SELECT * FROM "
          "metrics\"")


def main(args: Any, settings: Settings) -> int:
    try:
        from_ts = parse_time(args.from_) if args.from_ else None
        to_ts = parse_time(args.to) if args.to else None
        with Archive(settings.data_dir, settings.clickhouse_url) as archive:
            rows = compute(archive.query, settings, args.session, from_ts, to_ts)
    except (NoHistory, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([as_json(r) for r in rows], indent=1))
    else:
        print_tables(rows)
    return 0
