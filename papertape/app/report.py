"""`papertape report`: one self-contained HTML file of the archive's sessions (README "Report"). Per session: equity
with its drawdowns shaded, the underwater curve, daily returns and a monthly heatmap, the trades' net P&L
distribution and their list, the fills on each symbol's price, the decision log, the metrics with their definitions
and the session's config.

Everything is read through one Archive. The metrics are `papertape metrics`' (performance.compute), the trades and
returns come from the same history (infra.history), and every value is shown by papertape.app.formatting. Charts
are plotly figures drawn by plotly.js, which is inlined once in the head: the file opens offline.

The document is a list of Sections (an overview, then one per session); build_report assembles it, so another kind
of section (a comparison of runs or of a pair of sessions) is one more function returning a Section, appended there.
"""
from __future__ import annotations

import html
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from itertools import accumulate
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import plotly.graph_objects as go
import plotly.offline

from infra.archive import Archive, NoHistory, ms, records, sql_string
from infra.history import Query
from infra.sql_endpoint import running
from papertape.app.compare import load_run, pair_table, parse_run, term_table
from papertape.app.formatting import duration, exact, metric, money, period, utc_time
from papertape.app.performance import account_table, compute, load_histories, parse_time, symbol_table
from papertape.config import Settings
from papertape.core.metrics.definitions import DEFINITIONS
from papertape.core.metrics.drift import TERMS, Drift, compare
from papertape.core.metrics.returns import (
    DAY_MS,
    EquityPoint,
    drawdown_periods,
    period_ends,
    simple_returns,
    underwater,
)
from papertape.core.metrics.summary import ALL_SYMBOLS, MetricsRow, SessionHistory
from papertape.core.metrics.trades import ZERO, FillRecord, Leg, Trade, average_price

DECISIONS_SHOWN = 500  # the latest ones, newest first
TRADES_SHOWN = 300  # round trips in the trade list, newest first
PRICE_POINTS = 2000  # at most this many price points per symbol (one per time bucket, the last in it)
SHADED_DRAWDOWNS = 20  # the deepest drawdown periods shaded on the equity chart
PRICE_DECIMALS = 8  # of an average entry or exit price
MARKERS_UP_TO = 200  # a line of at most this many points also shows each point
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

EQUITY_COLOUR = "#1f4e79"
PEAK_COLOUR = "#8c8c8c"
DRAWDOWN_FILL = "rgba(214, 39, 40, 0.13)"
LOSS_COLOUR = "#c0392b"
GAIN_COLOUR = "#1e8449"
PRICE_COLOUR = "#5d6d7e"

CHART_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
LAYOUT = dict(
    font=dict(family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif", size=12, color="#222"),
    paper_bgcolor="white", plot_bgcolor="white", hovermode="closest", title=dict(x=0.01, font=dict(size=14)),
    margin=dict(l=70, r=20, t=44, b=44), legend=dict(orientation="h", x=0.5, xanchor="center", y=1.0, yanchor="bottom"),
    xaxis=dict(gridcolor="#ececec", linecolor="#bbb", zeroline=False),
    yaxis=dict(gridcolor="#ececec", linecolor="#bbb", zerolinecolor="#999"),
)


# ---- what a session's section is drawn from ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Section:
    """A part of the document: the table of contents links to its anchor and to its parts' anchors."""

    anchor: str
    title: str
    body: str  # HTML
    parts: tuple[tuple[str, str], ...] = ()  # (anchor, title) of its subsections


@dataclass(frozen=True, slots=True)
class PriceSeries:
    source: str  # what the prices are: "mid (quotes)", "trades", "marks"; "" when none was recorded
    times: list[int]
    prices: list[float]


@dataclass(slots=True)
class SessionData:
    session: str
    strategy: str
    metrics: list[MetricsRow]  # performance.compute's rows of the session: the account per period, then symbols
    begin: EquityPoint  # the equity the window starts from
    end_ts: int
    equity: list[EquityPoint]  # `begin`, then every equity row of the window
    daily: list[tuple[str, float]]  # (UTC day, simple return)
    trades: list[Trade]  # closed in the window, and open at its end
    fills: list[FillRecord]  # of the window
    prices: dict[str, PriceSeries]  # of each symbol filled in the window
    decisions: list[dict]  # the latest DECISIONS_SHOWN, newest first
    decision_actions: dict[str, int]  # action -> how many decisions of the window took it
    config: str | None  # the latest config JSON in the window

    @property
    def account(self) -> list[MetricsRow]:
        return [r for r in self.metrics if r.symbol == ALL_SYMBOLS]

    def closed(self, t: Trade) -> bool:
        """Whether the trade closed in the window (else it was open at its end)."""
        return t.close_ts is not None and t.close_ts <= self.end_ts

    @property
    def closed_trades(self) -> list[Trade]:
        return [t for t in self.trades if self.closed(t)]


# ---- the command ---------------------------------------------------------------------------------------------------

def main(args: Any, settings: Settings) -> int:
    try:
        from_ts = parse_time(args.from_) if args.from_ else None
        to_ts = parse_time(args.to) if args.to else None
        # before the report's own archive is opened: a run of another data directory is read and closed in turn
        drifts = [compare_runs(a, b, settings) for a, b in getattr(args, "compare", None) or []]
        with Archive(settings.data_dir, settings.clickhouse_url) as archive:
            document = build_report(archive.query, settings, args.session, from_ts, to_ts, drifts)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(document, encoding="utf-8")
    except (NoHistory, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report written: {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


def compare_runs(a: str, b: str, settings: Settings) -> Drift:
    run_a, run_b = (load_run(text, *parse_run(text, settings.data_dir), settings) for text in (a, b))
    return compare(run_a, run_b)


def build_report(query: Query, settings: Settings, sessions: list[str] | None = None, from_ts: int | None = None,
                 to_ts: int | None = None, drifts: Iterable[Drift] = ()) -> str:
    """The whole document: a header, the overview, a section per session, then one per comparison of two runs."""
    histories = load_histories(query, settings, sessions)
    if not histories:
        raise NoHistory(f"no session with an equity series in the archive of {settings.data_dir}")
    rows = compute(query, settings, from_ts=from_ts, to_ts=to_ts, histories=histories)
    data = [load_session(query, h, [r for r in rows if r.session == name], from_ts) for name, h in histories.items()]
    sections = [overview_section(data), *[session_section(d) for d in data],
                *[drift_section(d, i) for i, d in enumerate(drifts, 1)]]
    return render_document(header_html(settings, data, from_ts, to_ts), sections)


def load_session(query: Query, history: SessionHistory, rows: list[MetricsRow], from_ts: int | None) -> SessionData:
    """Everything a session's section shows, over the window of its metrics rows."""
    session, account = history.session, rows[0]
    begin = EquityPoint(account.from_ts, account.start_equity if account.start_equity is not None else ZERO)
    end = account.to_ts
    lo = begin.ts if from_ts is not None else -1  # the window is (lo, end], as the metrics take it
    fills = [f for f in history.fills if lo < f.ts <= end]
    s = sql_string(session)
    decisions, decision_actions = load_decisions(query, s, lo, end)
    return SessionData(
        session=session, strategy=account.strategy, metrics=rows, begin=begin, end_ts=end,
        equity=[begin, *load_equity(query, s, lo, end)],
        daily=daily_returns(begin, [p for p in history.points if begin.ts < p.ts <= end]),
        trades=[t for t in history.trades() if t.open_ts <= end and (t.close_ts is None or t.close_ts > lo)],
        fills=fills, prices={sym: load_prices(query, sym, begin.ts, end) for sym in sorted({f.symbol for f in fills})},
        decisions=decisions, decision_actions=decision_actions, config=load_config(query, s, end))


# ---- reading the archive -------------------------------------------------------------------------------------------

def load_equity(query: Query, s: str, lo: int, end: int) -> list[EquityPoint]:
    """Every equity row of the session (quoted `s`) in (lo, end]."""
    return [EquityPoint(int(t), Decimal(e)) for t, e in query(
        f"SELECT {ms('ts')} AS t, equity FROM equity WHERE session = {s} AND t > {lo} AND t <= {end} "
        "ORDER BY ts, id")["rows"]]


def load_prices(query: Query, symbol: str, lo: int, end: int) -> PriceSeries:
    """The symbol's price over [lo, end], at most PRICE_POINTS points (the last of each time bucket): the quotes'
    mid, else the trades' prices, else the marks."""
    bucket = max(1, -(-(end - lo) // PRICE_POINTS))
    sym = sql_string(symbol)
    sources = (("mid (quotes)", "md_quotes", "(bid + ask) / 2", "bid IS NOT NULL AND ask IS NOT NULL"),
               ("trades", "md_trades", "price", "1"), ("marks", "md_marks", "mark", "1"))
    for source, table, value, condition in sources:
        rows = query(f"""
            SELECT max(t) AS last, argMax(v, (t, id)) FROM (
                SELECT {ms('ts')} AS t, id, {value} AS v FROM {table}
                WHERE symbol = {sym} AND {condition} AND t >= {lo} AND t <= {end})
            GROUP BY intDiv(t - {lo}, {bucket}) ORDER BY last""")["rows"]
        if rows:
            return PriceSeries(source, [int(t) for t, _ in rows], [float(v) for _, v in rows])
    return PriceSeries("", [], [])


def load_decisions(query: Query, s: str, lo: int, end: int) -> tuple[list[dict], dict[str, int]]:
    """The latest DECISIONS_SHOWN decisions in (lo, end], newest first, and how many there are of each action."""
    where = f"session = {s} AND {ms('ts')} > {lo} AND {ms('ts')} <= {end}"
    counts = {a: int(n) for a, n in query(f"SELECT action, count() AS n FROM decisions WHERE {where} "
                                          "GROUP BY action ORDER BY n DESC, action")["rows"]}
    shown = records(query(f"""
        SELECT {ms('ts')} AS t, symbol, action, confidence, risk_score, opportunity_score, intel, reasoning, order_id
        FROM decisions WHERE {where} ORDER BY t DESC, id DESC LIMIT {DECISIONS_SHOWN}"""))
    return shown, counts


def load_config(query: Query, s: str, end: int) -> str | None:
    """The session's config JSON as of the window's end (its latest status then)."""
    rows = query(f"SELECT argMax(config, ts) FROM sessions WHERE session = {s} AND {ms('ts')} <= {end} "
                 "HAVING count() > 0")["rows"]
    return rows[0][0] if rows else None


# ---- series ---------------------------------------------------------------------------------------------------------

def daily_returns(begin: EquityPoint, points: list[EquityPoint]) -> list[tuple[str, float]]:
    """The simple return of each UTC day (the last may be partial), labelled with the day it covers."""
    samples = period_ends(begin, points, DAY_MS).points  # days without an equity point have no bar (return 0)
    return [(day(s.ts - 1), r) for s, r in zip(samples[1:], simple_returns(samples))]


def monthly_returns(daily: list[tuple[str, float]]) -> dict[tuple[int, int], float]:
    """(year, month) -> the month's daily returns compounded."""
    growth: dict[tuple[int, int], float] = {}
    for d, r in daily:
        key = (int(d[:4]), int(d[5:7]))
        growth[key] = growth.get(key, 1.0) * (1 + r)
    return {k: g - 1 for k, g in growth.items()}


def time_range(d: SessionData) -> list[str]:
    """The window, as every time chart of a session spans it (so they line up)."""
    return [axis_time(d.begin.ts), axis_time(d.end_ts)]


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def day(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def axis_time(ts: int) -> str:
    """Event time as plotly reads a date (UTC, no zone suffix)."""
    return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def rounded_average(legs: list[Leg]) -> Decimal | None:
    avg = average_price(legs)
    return None if avg is None else round(avg, PRICE_DECIMALS)


# ---- charts ---------------------------------------------------------------------------------------------------------

def chart_html(fig: go.Figure, name: str, session: str, height: int = 340) -> str:
    """A figure in a div a reader (or a test) finds by its data-chart name and session; plotly.js is in the head."""
    anchor = f"chart-{session}-{name}"
    fig.update_layout(LAYOUT, height=height)
    plot = fig.to_html(include_plotlyjs=False, full_html=False, div_id=f"{anchor}-plot", config=CHART_CONFIG,
                       default_height=f"{height}px")
    return (f'<div class="chart" id="{attr(anchor)}" data-chart="{attr(name)}" data-session="{attr(session)}">'
            f"{plot}</div>")


def no_chart(name: str, session: str, why: str) -> str:
    """What stands where a chart has nothing to draw."""
    return f'<p class="empty" data-chart-empty="{attr(name)}" data-session="{attr(session)}">{esc(why)}</p>'


def equity_chart(d: SessionData) -> str:
    if len(d.equity) < 2:
        return no_chart("equity", d.session, "No equity recorded in the window.")
    times = [axis_time(p.ts) for p in d.equity]
    values = [float(p.equity) for p in d.equity]
    peaks = list(accumulate(values, max))
    mode = "lines+markers" if len(values) <= MARKERS_UP_TO else "lines"
    fig = go.Figure([
        go.Scatter(x=times, y=peaks, mode="lines", name="running peak", line=dict(color=PEAK_COLOUR, width=1,
                                                                                    dash="dot"), hoverinfo="skip"),
        go.Scatter(x=times, y=values, mode=mode, name="equity", line=dict(color=EQUITY_COLOUR, width=2),
                   marker=dict(size=5), hovertemplate="%{x}<br>equity %{y:,.2f}<extra></extra>")])
    every = drawdown_periods(d.equity)
    periods = sorted(every, key=lambda p: p.depth)[:SHADED_DRAWDOWNS]
    for i, dd in enumerate(periods):
        fig.add_vrect(x0=axis_time(dd.start), x1=axis_time(dd.end), fillcolor=DRAWDOWN_FILL, line_width=0,
                      layer="below", annotation_text=f"max drawdown {metric('percent', dd.depth)}" if i == 0 else None,
                      annotation_position="top left", annotation_font_size=11)
    count = len(every)
    shaded = (f"; shaded: the {len(periods)} deepest of {count} drawdowns" if count > len(periods)
              else f"; shaded: {plural(count, 'drawdown')}" if count else "; no drawdown")
    fig.update_layout(title_text=f"Equity, {plural(len(d.equity), 'point')}{shaded}", yaxis_tickformat=",.2f",
                      xaxis_title="UTC", xaxis_range=time_range(d))
    return chart_html(fig, "equity", d.session, 380)


def underwater_chart(d: SessionData) -> str:
    if len(d.equity) < 2:
        return no_chart("underwater", d.session, "No equity recorded in the window.")
    fig = go.Figure(go.Scatter(
        x=[axis_time(p.ts) for p in d.equity], y=[u * 100 for u in underwater(d.equity)], mode="lines",
        fill="tozeroy", line=dict(color=LOSS_COLOUR, width=1.5), fillcolor="rgba(192, 57, 43, 0.25)",
        name="below peak", hovertemplate="%{x}<br>%{y:.4f} % below the peak<extra></extra>"))
    fig.update_layout(title_text="Underwater: equity / running peak - 1", yaxis_ticksuffix=" %",
                      yaxis_rangemode="tozero", showlegend=False, xaxis_range=time_range(d))
    return chart_html(fig, "underwater", d.session, 240)


def daily_chart(d: SessionData) -> str:
    if not d.daily:
        return no_chart("daily", d.session, "No daily returns: no equity after the window's start.")
    returns = [r * 100 for _, r in d.daily]
    fig = go.Figure(go.Bar(
        x=[day_ for day_, _ in d.daily], y=returns, marker_color=[GAIN_COLOUR if r >= 0 else LOSS_COLOUR
                                                                    for r in returns],
        text=[f"{r:.2f} %" for r in returns] if len(returns) <= 31 else None, textposition="outside",
        hovertemplate="%{x}<br>%{y:.4f} %<extra></extra>"))
    fig.update_layout(title_text=f"Daily returns (UTC days), {len(returns)}", yaxis_ticksuffix=" %",
                      xaxis_type="category" if len(returns) <= 31 else "date", showlegend=False,
                      bargap=0.6 if len(returns) < 8 else 0.15)
    return chart_html(fig, "daily", d.session, 300)


def monthly_chart(d: SessionData) -> str:
    monthly = monthly_returns(d.daily)
    if not monthly:
        return no_chart("monthly", d.session, "No monthly returns: no equity after the window's start.")
    years = sorted({y for y, _ in monthly})
    z = [[monthly[(y, m)] * 100 if (y, m) in monthly else None for m in range(1, 13)] for y in years]
    limit = max(abs(v) for row in z for v in row if v is not None) or 1.0
    fig = go.Figure(go.Heatmap(
        x=list(MONTHS), y=[str(y) for y in years], z=z, zmid=0, zmin=-limit, zmax=limit, colorscale="RdYlGn",
        text=[["" if v is None else f"{v:.2f} %" for v in row] for row in z], texttemplate="%{text}",
        hovertemplate="%{y} %{x}: %{z:.4f} %<extra></extra>", xgap=2, ygap=2,
        colorbar=dict(ticksuffix=" %", thickness=12)))
    fig.update_layout(title_text="Monthly returns (daily returns compounded)", yaxis_type="category",
                      xaxis_type="category", xaxis_showgrid=False, yaxis_showgrid=False)
    return chart_html(fig, "monthly", d.session, 140 + 40 * len(years))


def trades_chart(d: SessionData) -> str:
    nets = [float(t.net) for t in d.closed_trades]
    if not nets:
        still_open = len(d.trades) - len(d.closed_trades)
        return no_chart("trades", d.session, f"No closed trades in the window ({still_open} open at its end).")
    wins, losses = [n for n in nets if n > 0], [n for n in nets if n <= 0]
    fig = go.Figure()
    for label, values, colour in ((f"winning ({len(wins)})", wins, GAIN_COLOUR),
                                  (f"losing or even ({len(losses)})", losses, LOSS_COLOUR)):
        if values:
            fig.add_trace(go.Histogram(x=values, name=label, marker_color=colour, bingroup="net",
                                       nbinsx=min(60, max(10, len(nets) // 2)),
                                       hovertemplate="net %{x}<br>%{y} trades<extra></extra>"))
    fig.add_vline(x=0, line_color="#555", line_width=1)
    fig.update_layout(title_text=f"Net P&L of {plural(len(nets), 'closed trade')} (after fees and funding)",
                      barmode="stack", bargap=0.05, xaxis_title="net P&L", yaxis_title="trades")
    return chart_html(fig, "trades", d.session, 300)


def fills_chart(d: SessionData, symbol: str) -> str:
    prices = d.prices[symbol]
    mine = [f for f in d.fills if f.symbol == symbol]
    fig = go.Figure()
    if prices.times:
        fig.add_trace(go.Scatter(x=[axis_time(t) for t in prices.times], y=prices.prices, mode="lines",
                                 name=prices.source, line=dict(color=PRICE_COLOUR, width=1),
                                 hovertemplate="%{x}<br>%{y}<extra></extra>"))
    for side, colour, shape in (("buy", GAIN_COLOUR, "triangle-up"), ("sell", LOSS_COLOUR, "triangle-down")):
        side_fills = [f for f in mine if f.side == side]
        if side_fills:
            fig.add_trace(go.Scatter(
                x=[axis_time(f.ts) for f in side_fills], y=[float(f.price) for f in side_fills], mode="markers",
                name=f"{side} ({len(side_fills)})", customdata=[[exact(f.qty), money(f.fee), f.order_id]
                                                                for f in side_fills],
                marker=dict(symbol=shape, size=12, color=colour, line=dict(color="white", width=1)),
                hovertemplate=f"{side} %{{customdata[0]}} at %{{y}}<br>%{{x}}<br>fee %{{customdata[1]}}"
                              "<br>order %{customdata[2]}<extra></extra>"))
    source = f"{prices.source}, {len(prices.times)} points" if prices.times else "no prices recorded"
    fig.update_layout(title_text=f"{symbol}: {plural(len(mine), 'fill')} on the price ({source})", xaxis_title="UTC",
                      xaxis_range=time_range(d))
    return chart_html(fig, f"fills-{symbol}", d.session, 380)


# ---- tables ---------------------------------------------------------------------------------------------------------

def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=False)


def attr(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table_html(columns: list[str], rows: Iterable[list[Any]], numeric: Iterable[int] = (), cls: str = "") -> str:
    """A plain table; the cells of the `numeric` columns right-aligned. Cells are escaped."""
    right = set(numeric)
    head = "".join(f'<th{" class=num" if i in right else ""}>{esc(c)}</th>' for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in right else ""}>{esc(v)}</td>'
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{attr(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def metrics_tables(d: SessionData) -> str:
    account = account_table(d.account)
    columns = [*account["columns"], "definition"]
    rows = [[*row, DEFINITIONS[row[0]][1]] for row in account["rows"]]
    steps = ", ".join(f"{period(r.period_ms)} = " + ("UTC days" if r.period_ms == DAY_MS else
                                                      f"steps of {duration(r.period_ms)}") for r in d.account)
    out = (f'<p class="note">Each column is a period of the returns: {esc(steps)}. Window '
           f"{esc(utc_time(d.begin.ts))} .. {esc(utc_time(d.end_ts))}.</p>"
           + table_html(columns, rows, numeric=range(1, len(columns) - 1), cls="metrics"))
    symbols = [r for r in d.metrics if r.symbol != ALL_SYMBOLS]
    if symbols:
        per_symbol = symbol_table(symbols)
        out += ('<h4>Per symbol (its trades, fills and funding)</h4>'
                + table_html(per_symbol["columns"], per_symbol["rows"], numeric=range(1, len(per_symbol["columns"])),
                             cls="symbols"))
    return out


def trades_table(d: SessionData) -> str:
    if not d.trades:
        return '<p class="note">No trades in the window.</p>'
    newest = sorted(d.trades, key=lambda t: t.open_ts, reverse=True)[:TRADES_SHOWN]
    rows = [trade_row(t, t.close_ts if d.closed(t) else None) for t in newest]
    shown = f"the latest {len(newest)} of {len(d.trades)}" if len(newest) < len(d.trades) else f"all {len(newest)}"
    return (f'<p class="note">Round trips (flat to flat, per symbol), {shown}, newest first; net = gross - fees + '
            "funding.</p><div class=\"scroll\">"
            + table_html(["symbol", "side", "opened", "closed", "held", "qty", "avg entry", "avg exit", "gross",
                          "fees", "funding", "net"], rows, numeric=range(4, 12), cls="trades") + "</div>")


def trade_row(t: Trade, closed_at: int | None) -> list[Any]:
    """A round trip as the trade list shows it; `closed_at` None: open at the window's end."""
    return [t.symbol, t.side, utc_time(t.open_ts), utc_time(closed_at) if closed_at is not None else "open",
            duration(closed_at - t.open_ts) if closed_at is not None else "", exact(t.qty),
            exact(rounded_average(t.entries)), exact(rounded_average(t.exits)) if t.exits else "", money(t.gross),
            money(t.fees), money(t.funding), money(t.net) if closed_at is not None else ""]


def decisions_table(d: SessionData) -> str:
    if not d.decisions:
        return '<p class="note">No decisions in the window.</p>'
    rows = "".join(
        f'<tr class="action-{attr(r["action"])}"><td>{esc(utc_time(int(r["t"])))}</td><td>{esc(r["symbol"])}</td>'
        f'<td class="action">{esc(r["action"])}</td><td class=num>{esc(metric("ratio", r["confidence"]))}</td>'
        f'<td class=num>{esc(metric("ratio", r["risk_score"]))}</td>'
        f'<td class=num>{esc(metric("ratio", r["opportunity_score"]))}</td><td class=num>{esc(r["intel"])}</td>'
        f'<td>{esc(r["order_id"])}</td><td class="reasoning">{esc(r["reasoning"])}</td></tr>'
        for r in d.decisions)
    head = "".join(f"<th>{c}</th>" for c in ("time (UTC)", "symbol", "action", "confidence", "risk", "opportunity",
                                              "intel", "order", "reasoning"))
    total = sum(d.decision_actions.values())
    actions = ", ".join(f"{n} {a}" for a, n in d.decision_actions.items())
    shown = f"the latest {len(d.decisions)} shown" if len(d.decisions) < total else "all shown"
    return (f'<p class="note">{total} decisions ({esc(actions)}); {shown}, newest first. Risk: the chance the '
            "stop-loss is hit within the maximum hold time; opportunity: the confidence left after costs.</p>"
            f'<div class="scroll"><table class="decisions"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
            "</table></div>")


def config_html(d: SessionData) -> str:
    if d.config is None:
        return '<p class="note">No config recorded for this session.</p>'
    try:
        text = json.dumps(json.loads(d.config), indent=2)
    except ValueError:
        text = d.config
    return f'<p class="note">As of the window\'s end (the latest status of the session).</p><pre>{esc(text)}</pre>'


def summary_cards(d: SessionData) -> str:
    """The figures a reader looks at first."""
    step_row = d.account[-1]  # the finest period
    cards = [("end equity", metric("money", step_row.end_equity)),
             ("total return", metric("percent", step_row.total_return)),
             ("max drawdown", metric("percent", step_row.max_drawdown)),
             *[(f"Sharpe {period(p)}", metric("ratio", r.sharpe) or "n/a") for r in d.account for p in [r.period_ms]],
             ("closed trades", f"{step_row.trades} ({step_row.open_trades} open)"),
             ("win rate", metric("percent", step_row.win_rate) or "n/a"),
             ("profit factor", metric("ratio", step_row.profit_factor) or "n/a"),
             ("fees", metric("money", step_row.fees)), ("fills", str(len(d.fills)))]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{esc(k)}</div>'
        f'<div class="value{" negative" if v.startswith("-") else ""}">{esc(v)}</div></div>'
        for k, v in cards) + "</div>"


# ---- sections and the document -------------------------------------------------------------------------------------

def overview_section(data: list[SessionData]) -> Section:
    rows = "".join(
        f'<tr><td><a href="#session-{attr(d.session)}">{esc(d.session)}</a></td><td>{esc(d.strategy)}</td>'
        f"<td>{esc(utc_time(d.begin.ts))}</td><td>{esc(utc_time(d.end_ts))}</td>"
        + "".join(f"<td class=num>{esc(v)}</td>" for v in overview_figures(d)) + "</tr>" for d in data)
    head = "".join(f"<th>{esc(c)}</th>" for c in ("session", "strategy", "from", "to", "start equity", "end equity",
                                                   "total return", "max drawdown",
                                                   f"Sharpe ({period(data[0].account[-1].period_ms)})",
                                                   "closed trades", "win rate", "fees", "fills"))
    return Section("overview", "Overview", f'<table class="overview"><thead><tr>{head}</tr></thead>'
                                           f"<tbody>{rows}</tbody></table>")


def overview_figures(d: SessionData) -> list[str]:
    r = d.account[-1]
    return [metric("money", r.start_equity), metric("money", r.end_equity), metric("percent", r.total_return),
            metric("percent", r.max_drawdown), metric("ratio", r.sharpe), str(r.trades), metric("percent", r.win_rate),
            metric("money", r.fees), str(len(d.fills))]


def session_section(d: SessionData) -> Section:
    anchor = f"session-{d.session}"
    fills = "".join(fills_chart(d, sym) for sym in d.prices) or no_chart("fills", d.session, "No fills in the window.")
    parts = [("equity", "Equity and drawdowns", equity_chart(d) + underwater_chart(d)),
             ("returns", "Returns", daily_chart(d) + monthly_chart(d)),
             ("trades", "Trades", trades_chart(d) + trades_table(d)),
             ("fills", "Fills on the price", fills),
             ("decisions", "Decision log", decisions_table(d)),
             ("metrics", "Metrics", metrics_tables(d)),
             ("config", "Config", config_html(d))]
    body = summary_cards(d) + "".join(f'<h3 id="{attr(anchor)}-{key}">{esc(title)}</h3>{content}'
                                      for key, title, content in parts)
    return Section(anchor, f"Session {d.session} ({d.strategy or 'strategy unknown'})", body,
                   tuple((f"{anchor}-{key}", title) for key, title, _ in parts))


def drift_section(d: Drift, n: int) -> Section:
    """`papertape compare`'s answer: the terms as a waterfall from B's P&L to A's, the terms' and the pairs' tables."""
    anchor = f"drift-{n}"
    names = [*TERMS]
    fig = go.Figure(go.Waterfall(
        x=["P&L of B", *names, "P&L of A"], measure=["absolute", *["relative"] * len(names), "total"],
        y=[float(d.b.pnl), *[float(d.totals[k]) for k in names], 0.0],
        text=[money(d.b.pnl), *[money(d.totals[k]) for k in names], money(d.a.pnl)], textposition="outside",
        increasing=dict(marker=dict(color=GAIN_COLOUR)), decreasing=dict(marker=dict(color=LOSS_COLOUR)),
        totals=dict(marker=dict(color=EQUITY_COLOUR))))
    fig.update_layout(title=f"{d.a.label} - {d.b.label}: {money(d.difference)}, term by term", showlegend=False)
    terms, pairs = term_table(d), pair_table(d)
    body = (f'<p class="note">A: {esc(d.a.label)}, P&amp;L {esc(money(d.a.pnl))} ({len(d.a.trades)} trades); '
            f"B: {esc(d.b.label)}, P&amp;L {esc(money(d.b.pnl))} ({len(d.b.trades)} trades). The terms add up to "
            f"the difference exactly (README, Drift).</p>"
            + chart_html(fig, "drift", anchor) + table_html(terms["columns"], terms["rows"], numeric=[1])
            + f'<h3 id="{anchor}-pairs">Trades, matched</h3><div class="scroll">'
            + table_html(pairs["columns"], pairs["rows"], numeric=[4, 5, 6]) + "</div>")
    return Section(anchor, f"Drift: {d.a.label} against {d.b.label}", body, ((f"{anchor}-pairs", "Trades"),))


def header_html(settings: Settings, data: list[SessionData], from_ts: int | None, to_ts: int | None) -> str:
    window = (f"{utc_time(from_ts) if from_ts is not None else 'each session’s start'} .. "
              f"{utc_time(to_ts) if to_ts is not None else 'its last record'}")
    span = f"{utc_time(min(d.begin.ts for d in data))} .. {utc_time(max(d.end_ts for d in data))}"
    facts = [("data directory", str(settings.data_dir)), ("archive", archive_source(settings)),
             ("window", window), ("time span", span), ("sessions", ", ".join(d.session for d in data)),
             ("generated", utc_time(int(datetime.now(timezone.utc).timestamp() * 1000)))]
    return ('<header><h1>papertape report</h1><dl class="facts">'
            + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl></header>")


def archive_source(settings: Settings) -> str:
    """Which archive the report was read from (a server's password left out)."""
    if settings.clickhouse_url:
        url = urlsplit(settings.clickhouse_url)
        host = url.hostname or ""
        netloc = (f"{url.username}@" if url.username else "") + host + (f":{url.port}" if url.port else "")
        return f"ClickHouse server {urlunsplit(url._replace(netloc=netloc))}"
    info = running(settings.data_dir)
    if info:
        return f"the running pipeline's SQL endpoint (port {info['sql_port']}), embedded ClickHouse (chdb)"
    return f"embedded ClickHouse (chdb) in {settings.data_dir / 'clickhouse'}"


def table_of_contents(sections: list[Section]) -> str:
    items = "".join(
        f'<li><a href="#{attr(s.anchor)}">{esc(s.title)}</a>'
        + ("<ol>" + "".join(f'<li><a href="#{attr(a)}">{esc(t)}</a></li>' for a, t in s.parts) + "</ol>"
           if s.parts else "") + "</li>" for s in sections)
    return f'<nav class="toc"><h2>Contents</h2><ol>{items}</ol></nav>'


def render_document(header: str, sections: list[Section]) -> str:
    """The self-contained page: plotly.js inlined once in the head, then the header, contents and sections."""
    body = "".join(f'<section id="{attr(s.anchor)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>papertape report</title><style>{CSS}</style>"
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head>'
            f"<body><main>{header}{table_of_contents(sections)}{body}</main></body></html>\n")


CSS = """
body { margin: 0; background: #f4f5f7; color: #222; font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial,
       sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 16px 24px 48px; }
header h1 { margin: 8px 0 4px; font-size: 24px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0 16px; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace; }
nav.toc { background: white; border: 1px solid #dde; border-radius: 6px; padding: 8px 20px; margin-bottom: 20px; }
nav.toc h2 { font-size: 16px; margin: 6px 0; } nav.toc > ol > li { margin: 3px 0; }
nav.toc ol ol { display: flex; flex-wrap: wrap; gap: 0 18px; list-style: none; padding-left: 14px; font-size: 13px; }
section { background: white; border: 1px solid #dde; border-radius: 6px; padding: 4px 20px 16px; margin: 0 0 24px; }
section h2 { font-size: 20px; border-bottom: 2px solid #34495e; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 22px 0 6px; color: #34495e; } h4 { font-size: 14px; margin: 14px 0 4px; }
.chart { margin: 4px 0 10px; }
.empty { color: #777; font-style: italic; padding: 12px; border: 1px dashed #ccd; border-radius: 4px; }
.note { color: #555; font-size: 13px; margin: 4px 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(112px, 1fr)); gap: 8px; margin: 8px 0 4px; }
.card { border: 1px solid #dde; border-radius: 6px; padding: 6px 10px; background: #fafbfc; }
.card .label { color: #666; font-size: 12px; } .card .value { font-size: 15px; font-weight: 600; }
.card .value.negative { color: #c0392b; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #e4e6ea; padding: 3px 8px; text-align: left; vertical-align: top;
         white-space: nowrap; }
th { background: #f0f2f5; position: sticky; top: 0; } td.num, th.num { text-align: right;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
table.metrics td:first-child, table.symbols td:first-child { font-family: ui-monospace, Menlo, Consolas, monospace; }
table.metrics td:last-child { color: #555; white-space: normal; }
.scroll { max-height: 520px; overflow: auto; border: 1px solid #e4e6ea; }
table.decisions td.reasoning { white-space: normal; min-width: 360px; }
table.overview th { white-space: normal; }
tr.action-buy td.action { color: #1e8449; font-weight: 600; } tr.action-sell td.action { color: #c0392b;
  font-weight: 600; } tr.action-hold td.action { color: #888; } tr.action-reject td.action,
tr.action-blocked td.action { color: #b9770e; font-weight: 600; }
pre { background: #f7f8fa; border: 1px solid #e4e6ea; padding: 10px; font-size: 12px; max-height: 480px;
      overflow: auto; }
"""
