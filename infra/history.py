"""A session's history out of the archive, as the metrics core takes it (papertape.core.metrics.SessionHistory):
its deposit, equity series, fills, funding, and the mids its orders met. Every reader of metrics goes through
it: the metrics table's writer, `papertape metrics`, `report` and `compare`.

`query` is any `sql -> {"columns", "types", "rows"}` (infra.archive.Archive.query, infra.sql_endpoint.query_local).
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Callable

from infra.archive import ms, records, sql_string
from papertape.core.metrics.execution import OrderMids
from papertape.core.metrics.returns import EquityPoint
from papertape.core.metrics.summary import SessionHistory
from papertape.core.metrics.trades import FillRecord, FundingRecord

Query = Callable[[str], dict]
MID_LOOKBACK_S = 3600  # how far before a decision or an arrival a quote still gives its mid


def session_ids(query: Query) -> list[str]:
    """Every session with an equity series."""
    return [r[0] for r in query("SELECT DISTINCT session FROM equity ORDER BY session")["rows"]]


def check_sessions(query: Query, sessions: list[str] | None) -> list[str]:
    """`sessions` (None: every one in the archive); ValueError naming those the archive does not have."""
    known = session_ids(query)
    unknown = sorted(set(sessions or []) - set(known))
    if unknown:
        raise ValueError(f"no session {', '.join(map(repr, unknown))} in the archive (it has: "
                         f"{', '.join(known) or 'none'})")
    return list(sessions) if sessions else known


def input_rows(query: Query, session: str) -> int:
    """How many equity, fill and funding rows the session has: grows with every one recorded."""
    s = sql_string(session)
    return int(query(f"SELECT (SELECT count() FROM equity WHERE session = {s}) + (SELECT count() FROM fills "
                     f"WHERE session = {s}) + (SELECT count() FROM funding WHERE session = {s})")["rows"][0][0])


def load_history(query: Query, session: str, step_ms: int, known_mids: dict[str, OrderMids] | None = None
                 ) -> SessionHistory:
    """The session's history; its equity at the end of every `step_ms` (the finest period the metrics use).
    `known_mids`: orders whose mids were found before (a refresh looks up only the new orders' mids)."""
    s = sql_string(session)
    points = [EquityPoint(int(t), Decimal(e)) for t, e in query(f"""
        SELECT max({ms('ts')}) AS t, argMax(equity, ts) AS e FROM equity WHERE session = {s}
        GROUP BY intDiv({ms('ts')} + {step_ms - 1}, {step_ms}) ORDER BY t""")["rows"]]
    start, strategy = _start(query, s, points)
    fills = sorted((_fill(r) for r in records(query(f"""
        SELECT id, {ms('ts')} AS ts, order_id, symbol, side, price, qty, fee, realized_pnl
        FROM fills WHERE session = {s}"""))), key=lambda f: f[0])
    funding = [FundingRecord(int(t), sym, Decimal(a)) for t, sym, a in query(
        f"SELECT {ms('ts')}, symbol, amount FROM funding WHERE session = {s} ORDER BY ts, id")["rows"]]
    return SessionHistory(session, strategy, start, [p for p in points if p.ts > start.ts], [f for _, f in fills],
                          funding, _mids(query, s, known_mids or {}))


def _start(query: Query, s: str, points: list[EquityPoint]) -> tuple[EquityPoint, str]:
    """The deposit at the session's start (its first status), and its strategy."""
    rows = query(f"SELECT {ms('min(ts)')}, argMin(config, ts), argMax(strategy, ts) FROM sessions "
                 f"WHERE session = {s} HAVING count() > 0")["rows"]
    if not rows:  # an archive without the session's status: its first equity point
        return (points[0] if points else EquityPoint(0, Decimal(0))), ""
    ts, config, strategy = rows[0]
    return EquityPoint(int(ts), Decimal(str(json.loads(config)["balance"]))), strategy


def _fill(r: dict) -> tuple[tuple[int, int], FillRecord]:
    """A fill and its place: event time, then the session's fill number (the id's `:f<n>`)."""
    seq = int(r["id"].rsplit(":f", 1)[1])
    return (int(r["ts"]), seq), FillRecord(int(r["ts"]), r["order_id"], r["symbol"], r["side"], Decimal(r["price"]),
                                           Decimal(r["qty"]), Decimal(r["fee"]), Decimal(r["realized_pnl"]))


def _mids(query: Query, s: str, known: dict[str, OrderMids]) -> dict[str, OrderMids]:
    """For each filled order, the mid of the last quote at or before its decision (its trigger, for a stop; its
    first event, for an order from the orders topic) and its arrival at the venue (its first event, or trigger);
    `known` ones are not looked up again. Of several quotes in one millisecond, the one with the greatest frame id
    (the archive keeps no finer order). Quotes are read from the log table, with no FINAL merge: a quote delivered
    twice is the same row twice. A quote more than MID_LOOKBACK_S older is no mid."""
    asked = [(oid, what, symbol, int(at)) for oid, symbol, decided, arrived in query(f"""
        SELECT e.order_id, e.symbol,
               {ms("if(e.triggered > 0, e.trigger_ts, if(d.order_id != '', d.ts, e.first_ts))")},
               {ms("if(e.triggered > 0, e.trigger_ts, e.first_ts)")}
        FROM (SELECT order_id, any(symbol) AS symbol, min(ts) AS first_ts, countIf(status = 'triggered') AS
                     triggered, minIf(ts, status = 'triggered') AS trigger_ts
              FROM order_events WHERE session = {s}
                AND order_id IN (SELECT order_id FROM fills WHERE session = {s}) GROUP BY order_id) AS e
        LEFT JOIN (SELECT order_id, min(ts) AS ts FROM decisions WHERE session = {s} AND order_id IS NOT NULL
                   GROUP BY order_id) AS d ON d.order_id = e.order_id
        SETTINGS join_use_nulls = 0""")["rows"] if oid not in known
        for what, at in (("decision", decided), ("arrival", arrived))]
    if not asked:
        return dict(known)
    values = ", ".join(f"({sql_string(oid)}, '{what}', {sql_string(symbol)}, {at})" for oid, what, symbol, at in asked)
    symbols = ", ".join(sql_string(sym) for sym in {a[2] for a in asked})
    lo, hi = min(a[3] for a in asked) - MID_LOOKBACK_S * 1000, max(a[3] for a in asked)
    rows = query(f"""
        SELECT a.order_id, a.what, q.mid
        FROM (SELECT order_id, what, symbol, fromUnixTimestamp64Milli(at, 'UTC') AS at
              FROM VALUES('order_id String, what String, symbol String, at Int64', {values})) AS a
        ASOF LEFT JOIN (SELECT symbol, ts, argMax((bid + ask) / 2, id) AS mid FROM md_quotes_log
                        WHERE bid IS NOT NULL AND ask IS NOT NULL AND symbol IN ({symbols})
                          AND {ms('ts')} BETWEEN {lo} AND {hi} GROUP BY symbol, ts) AS q
          ON a.symbol = q.symbol AND a.at >= q.ts
        SETTINGS join_use_nulls = 1""")["rows"]
    found: dict[str, dict[str, Decimal | None]] = {}
    for order_id, what, mid in rows:
        found.setdefault(order_id, {})[what] = None if mid is None else Decimal(mid)
    return {**known, **{oid: OrderMids(m.get("decision"), m.get("arrival")) for oid, m in found.items()}}


def final_equity(query: Query, session: str) -> tuple[Decimal, Decimal]:
    """The session's last equity and the unrealized P&L in it."""
    rows = query(f"SELECT argMax(equity, ts), argMax(unrealized_pnl, ts) FROM equity "
                 f"WHERE session = {sql_string(session)} HAVING count() > 0")["rows"]
    if not rows:
        raise ValueError(f"session {session!r} has no equity in the archive")
    return Decimal(rows[0][0]), Decimal(rows[0][1])
