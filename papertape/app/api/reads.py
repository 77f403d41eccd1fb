"""What the API reads from the archive: one parameterized query per resource (values bind ClickHouse's
`{name:Type}` placeholders, never pasted into the SQL), rows as JSON records with exact decimals and event times in
ms since the epoch."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from infra.archive import ms, tables
from papertape.app.formatting import exact
from papertape.app.sessions import SEQ  # orders the engine's messages of one event time

Query = Callable[..., dict]  # Archive.query(sql, params)



def rows(result: dict) -> list[dict[str, Any]]:
    """A query result as records, decimals as exact text without trailing zeros (JSON numbers would round)."""
    decimal = [t.removeprefix("Nullable(").startswith("Decimal") for t in result["types"]]
    return [{c: exact(Decimal(v)) if d and v is not None else v for c, d, v in zip(result["columns"], decimal, row)}
            for row in result["rows"]]


def has_tables(query: Query) -> bool:
    return "equity" in tables(query)


def session_known(query: Query, session: str) -> bool:
    """Whether the archive has a status or an equity row of the session (the raw tables: existence needs no FINAL)."""
    return bool(query("SELECT (SELECT count() FROM (SELECT 1 FROM sessions_log WHERE session = {s:String} LIMIT 1))"
                      " + (SELECT count() FROM (SELECT 1 FROM equity_log WHERE session = {s:String} LIMIT 1))",
                      {"s": session})["rows"][0][0])


def session_status(query: Query, session: str) -> dict[str, Any] | None:
    """The session's latest status message (status, event, strategy, intel, breakers, config), or None."""
    found = rows(query(f"""
        SELECT session, status, event, strategy, intel, {ms("ts")} AS ts, breakers, config FROM sessions
        WHERE session = {{session:String}} ORDER BY ts DESC, {SEQ} DESC, id DESC LIMIT 1""", {"session": session}))
    return found[0] if found else None


def portfolio(query: Query, session: str | None = None) -> list[dict[str, Any]]:
    """Each session's latest account snapshot: cash, equity, P&L, fees, funding, open positions."""
    where = "WHERE session = {session:String}" if session else ""
    return rows(query(f"""
        SELECT session, argMax(cash, k) AS cash, argMax(equity, k) AS equity,
               argMax(realized_pnl, k) AS realized_pnl, argMax(unrealized_pnl, k) AS unrealized_pnl,
               argMax(fees, k) AS fees, argMax(funding, k) AS funding, argMax(open_positions, k) AS open_positions,
               {ms("max(ts)")} AS ts
        FROM (SELECT *, (ts, {SEQ}, id) AS k FROM equity {where}) GROUP BY session ORDER BY session""",
                      {"session": session} if session else None))


def positions(query: Query, session: str, include_flat: bool = False) -> list[dict[str, Any]]:
    having = "" if include_flat else "WHERE qty != 0"
    return rows(query(f"""
        SELECT symbol, qty, avg_price, mark, unrealized_pnl, realized_pnl, {ms("as_of")} AS ts
        FROM (SELECT symbol, argMax(qty, k) AS qty, argMax(avg_price, k) AS avg_price, argMax(mark, k) AS mark,
                     argMax(unrealized_pnl, k) AS unrealized_pnl, argMax(realized_pnl, k) AS realized_pnl,
                     max(ts) AS as_of
              FROM (SELECT *, (ts, {SEQ}, id) AS k FROM positions WHERE session = {{session:String}})
              GROUP BY symbol)
        {having} ORDER BY symbol""", {"session": session}))


OPEN_STATUSES = ("new", "partially_filled", "triggered", "amended")


def orders(query: Query, session: str, state: str, limit: int) -> list[dict[str, Any]]:
    """Orders by their latest event: `open` (resting, waiting for a trigger), `closed` (filled, cancelled,
    rejected, expired) or `all`, newest first."""
    cond = {"open": "status IN {open:Array(String)}", "closed": "status NOT IN {open:Array(String)}",
            "all": "1"}[state]
    return rows(query(f"""
        SELECT order_id, symbol, side, type, status, qty, price, trigger_price, filled_qty, avg_price, reason,
               {ms("ts")} AS ts
        FROM (SELECT order_id, argMax(symbol, k) AS symbol, argMax(side, k) AS side, argMax(type, k) AS type,
                     argMax(status, k) AS status, argMax(qty, k) AS qty, argMax(price, k) AS price,
                     argMax(trigger_price, k) AS trigger_price, argMax(filled_qty, k) AS filled_qty,
                     argMax(avg_price, k) AS avg_price, argMax(reason, k) AS reason, max(ts) AS ts
              FROM (SELECT *, (ts, {SEQ}, id) AS k FROM order_events WHERE session = {{session:String}})
              GROUP BY order_id)
        WHERE {cond} ORDER BY ts DESC, order_id LIMIT {{limit:UInt32}}""",
                      {"session": session, "open": list(OPEN_STATUSES), "limit": limit}))


def fills(query: Query, session: str, since: int, limit: int) -> list[dict[str, Any]]:
    """Fills after event time `since` (ms), oldest first."""
    return rows(query(f"""
        SELECT id, {ms("ts")} AS ts, order_id, symbol, side, price, qty, liquidity, fee_rate, fee, realized_pnl,
               settle_coin, exec_type
        FROM (SELECT * FROM fills  -- filtered here: outside, `ts` is the alias in ms
              WHERE session = {{session:String}} AND ts > fromUnixTimestamp64Milli({{since:Int64}}, 'UTC'))
        ORDER BY ts, {SEQ}, id LIMIT {{limit:UInt32}}""", {"session": session, "since": since, "limit": limit}))


def decisions(query: Query, session: str, action: str | None, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` decisions (all actions, or one), oldest first."""
    where = "AND action = {action:String}" if action else ""
    return rows(query(f"""
        SELECT * FROM (
            SELECT id, {ms("ts")} AS ts, symbol, action, confidence, risk_score, opportunity_score, intel,
                   reasoning, order_id, {SEQ} AS seq
            FROM decisions WHERE session = {{session:String}} {where} ORDER BY ts DESC, seq DESC, id DESC
            LIMIT {{limit:UInt32}})
        ORDER BY ts, seq, id""", {"session": session, "action": action, "limit": limit}))


def equity_series(query: Query, session: str, since: int, points: int) -> list[dict[str, Any]]:
    """Equity after event time `since`, at most `points` of it: the last snapshot of each of `points` equal
    slices of the span (the whole series when it is shorter)."""
    return rows(query(f"""
        WITH bounds AS (SELECT min(ts) AS lo, max(ts) AS hi FROM equity
                        WHERE session = {{session:String}} AND ts > fromUnixTimestamp64Milli({{since:Int64}}, 'UTC'))
        SELECT {ms("max(ts)")} AS ts, argMax(equity, k) AS equity, argMax(cash, k) AS cash,
               argMax(unrealized_pnl, k) AS unrealized_pnl
        FROM (SELECT ts, equity, cash, unrealized_pnl, (ts, {SEQ}, id) AS k,
                     intDiv(toUnixTimestamp64Milli(ts) - toUnixTimestamp64Milli((SELECT lo FROM bounds)),
                            greatest(1, intDiv(toUnixTimestamp64Milli((SELECT hi FROM bounds))
                                               - toUnixTimestamp64Milli((SELECT lo FROM bounds)),
                                               {{points:UInt32}}) + 1)) AS slice
              FROM equity WHERE session = {{session:String}}
                                AND ts > fromUnixTimestamp64Milli({{since:Int64}}, 'UTC'))
        GROUP BY slice ORDER BY ts""", {"session": session, "since": since, "points": points}))


def metrics(query: Query, session: str | None) -> list[dict[str, Any]]:
    """The `metrics` table's rows (issue 16), of one session or all; times in ms."""
    if "metrics" not in tables(query):
        return []
    where = "WHERE session = {session:String}" if session else ""
    times = ("from_ts", "to_ts", "drawdown_start", "drawdown_trough", "drawdown_recovery")
    return rows(query(f"""
        SELECT * EXCEPT ({", ".join(times)}), {", ".join(f"{ms(t)} AS {t}" for t in times)}
        FROM metrics {where} ORDER BY session, symbol, period_ms""", {"session": session} if session else None))


def latest_price(query: Query, symbol: str) -> dict[str, Any] | None:
    """The symbol's latest mark (bid, ask, last, mark and its event time) and the archive's newest mark time."""
    found = rows(query(f"""
        SELECT symbol, argMax(bid, k) AS bid, argMax(ask, k) AS ask, argMax(last, k) AS last,
               argMax(mark, k) AS mark, {ms("max(ts)")} AS ts,
               (SELECT {ms("max(ts)")} FROM md_marks) AS clock
        FROM (SELECT *, (ts, id) AS k FROM md_marks WHERE symbol = {{symbol:String}}) GROUP BY symbol""",
                       {"symbol": symbol}))
    return found[0] if found else None


def alerts(query: Query, severities: list[str], types: list[str], session: str | None,
           acknowledged: bool | None, limit: int) -> list[dict[str, Any]]:
    """Alerts newest first, with their acknowledgement and what each channel made of them."""
    conds = ["1"]
    if severities:
        conds.append("a.severity IN {severities:Array(String)}")
    if types:
        conds.append("a.type IN {types:Array(String)}")
    if session:
        conds.append("a.session = {session:String}")
    if acknowledged is not None:
        conds.append(("" if acknowledged else "NOT ") + "(a.id IN (SELECT alert_id FROM alert_acks))")
    found = rows(query(f"""
        SELECT a.id AS id, {ms("a.ts")} AS ts, a.severity AS severity, a.type AS type, a.source AS source,
               a.title AS title, a.text AS text, a.session AS session,
               k.acked_ts AS acknowledged_ts, k.acked_by AS acknowledged_by,
               ifNull(d.deliveries, []) AS deliveries
        FROM alerts AS a
        LEFT JOIN (SELECT alert_id, {ms("min(ts)")} AS acked_ts, argMin(by, ts) AS acked_by FROM alert_acks
                   GROUP BY alert_id) AS k ON k.alert_id = a.id
        LEFT JOIN (SELECT alert_id, groupArray((channel, outcome, attempts, detail)) AS deliveries
                   FROM alert_deliveries GROUP BY alert_id) AS d ON d.alert_id = a.id
        WHERE {" AND ".join(conds)}
        ORDER BY a.ts DESC, a.id LIMIT {{limit:UInt32}}
        SETTINGS join_use_nulls = 1""",
                      {"severities": severities, "types": types, "session": session, "limit": limit}))
    for a in found:
        a["deliveries"] = [dict(zip(("channel", "outcome", "attempts", "detail"), d)) for d in a["deliveries"]]
    return found


def alert_exists(query: Query, alert_id: str) -> bool:
    return bool(query("SELECT count() FROM alerts WHERE id = {id:String}", {"id": alert_id})["rows"][0][0])
