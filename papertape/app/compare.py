"""`papertape compare A B`: two runs of a strategy side by side (a session in one data directory against a session
in another: a live run and a replay of its tape, or two configs on one tape). Each is `SESSION` or
`SESSION@DATA_DIR`: runs are told apart by their data directories (one per run), sessions inside one by their ids.
The decomposition is papertape.core.metrics.drift's. `papertape compare --shadow SESSION`: a session on an exchange
against the paper venue's simulation of its orders (papertape.core.metrics.shadow)."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from infra.archive import Archive, NoHistory
from infra.history import check_sessions, final_equity, load_history
from papertape.app.formatting import format_table, money, utc_time
from papertape.config import Settings, run_settings
from papertape.core.metrics.drift import TERMS, Drift, Pair, Run, compare
from papertape.core.metrics.shadow import ShadowOrder, summarize


def parse_run(text: str, default_dir: Path) -> tuple[str, Path]:
    session, _, where = text.partition("@")
    return session, Path(where) if where else default_dir


def load_run(label: str, session: str, data_dir: Path, settings: Settings) -> Run:
    """One run out of its archive; the archive is closed again (chdb opens one data directory at a time)."""
    with Archive(data_dir, settings.clickhouse_url if data_dir == settings.data_dir else None) as archive:
        check_sessions(archive.query, [session])
        h = load_history(archive.query, session, settings.metrics.step_ms)
        end, unrealized = final_equity(archive.query, session)
    return Run(label, h.trades(), h.mids, h.start.equity, end, unrealized)


def term_table(d: Drift) -> dict:
    rows = [[name, money(d.totals[name]), what] for name, what in TERMS.items()]
    rows.append(["total", money(d.explained), "= P&L of A - P&L of B"])
    return {"columns": ["term", "amount", "what"], "types": ["", "Decimal", ""], "rows": rows}


def pair_row(p: Pair) -> list[Any]:
    t = p.a or p.b
    assert t is not None
    big = max(p.terms, key=lambda k: abs(p.terms[k])) if p.terms else ""
    return [t.symbol, t.side, utc_time(p.a.open_ts) if p.a else "-", utc_time(p.b.open_ts) if p.b else "-",
            money(p.a.net) if p.a else "-", money(p.b.net) if p.b else "-", money(p.difference), big]


def pair_table(d: Drift) -> dict:
    return {"columns": ["symbol", "side", "opened in A", "opened in B", "net A", "net B", "difference", "mostly"],
            "types": ["", "", "", "", "Decimal", "Decimal", "Decimal", ""], "rows": [pair_row(p) for p in d.pairs]}


def as_json(d: Drift) -> dict[str, Any]:
    def trade(t: Any) -> dict | None:
        return None if t is None else {"symbol": t.symbol, "side": t.side, "open_ts": t.open_ts,
                                       "close_ts": t.close_ts, "net": str(t.net), "fees": str(t.fees)}
    return {"a": {"run": d.a.label, "pnl": str(d.a.pnl)}, "b": {"run": d.b.label, "pnl": str(d.b.pnl)},
            "difference": str(d.difference), "explained": str(d.explained),
            "terms": {k: str(v) for k, v in d.totals.items()},
            "pairs": [{"a": trade(p.a), "b": trade(p.b), "terms": {k: str(v) for k, v in p.terms.items()}}
                      for p in d.pairs]}


def print_drift(d: Drift) -> None:
    matched = sum(1 for p in d.pairs if p.a and p.b)
    print(f"A: {d.a.label}  P&L {money(d.a.pnl)} ({len(d.a.trades)} trades)")
    print(f"B: {d.b.label}  P&L {money(d.b.pnl)} ({len(d.b.trades)} trades)")
    print(f"difference A - B: {money(d.difference)}; {matched} trades matched, "
          f"{sum(1 for p in d.pairs if p.b is None)} only in A, {sum(1 for p in d.pairs if p.a is None)} only in B\n")
    print(format_table(term_table(d)))
    print()
    print(format_table(pair_table(d)))


SHADOW = ("SELECT order_id, symbol, side, type, exchange_qty, exchange_price, exchange_fee, exchange_liquidity, "
          "paper_qty, paper_price, paper_fee, paper_liquidity, paper_delay_ms FROM shadow_comparison "
          "WHERE session = {session:String} ORDER BY exchange_ts, order_id")


def shadow_orders(query: Any, session: str) -> list[ShadowOrder]:
    def dec(v: Any) -> Decimal | None:
        return None if v is None else Decimal(str(v))
    return [ShadowOrder(r[0], r[1], r[2], r[3] or "market", Decimal(str(r[4])), Decimal(str(r[5])),
                        Decimal(str(r[6])), r[7], dec(r[8]), dec(r[9]), dec(r[10]), r[11], r[12])
            for r in query(SHADOW, {"session": session})["rows"]]


def shadow_main(args: Any, settings: Settings) -> int:
    """`papertape compare --shadow SESSION[@DATA_DIR]`: a session on an exchange against the paper venue's
    simulation of each of its orders, per order type and symbol."""
    session, data_dir = parse_run(args.a, settings.data_dir)
    try:
        with Archive(data_dir, settings.clickhouse_url if data_dir == settings.data_dir else None) as archive:
            check_sessions(archive.query, [session])
            orders = shadow_orders(archive.query, session)
    except (NoHistory, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    run = run_settings(data_dir)
    ticks = {i.symbol: i.tick_size for i in (run.instruments if run else [])}
    found = summarize(orders, ticks)
    if args.json:
        print(json.dumps({"session": session, "orders": [asdict(o) for o in orders],
                          "summary": [asdict(x) for x in found]}, default=str, indent=1))
        return 0
    if not orders:
        print(f"{session}: no exchange fills to compare (a session on Bybit, with fills, has them)")
        return 0

    def num(x: float | None, digits: int = 2) -> str:
        return "-" if x is None else f"{x:.{digits}f}"
    rows = [[x.type, x.symbol, x.orders, x.paper_filled, num(x.mean_bps), num(x.median_bps), num(x.mean_ticks),
             money(x.qty_difference), money(x.fee_difference), num(x.mean_delay_ms, 0),
             num(None if x.same_liquidity is None else x.same_liquidity * 100, 0)] for x in found]
    print(f"{session}: the paper venue's simulation of {len(orders)} exchange orders (price error > 0: paper was "
          f"better than the exchange for the order's side)")
    print(format_table({"columns": ["type", "symbol", "orders", "paper filled", "mean bps", "median bps",
                                    "mean ticks", "qty diff", "fee diff", "delay ms", "same role %"],
                        "types": [""] * 11, "rows": rows}))
    return 0


def main(args: Any, settings: Settings) -> int:
    if args.shadow:
        return shadow_main(args, settings)
    if args.b is None:
        print("error: compare needs two runs A and B (or --shadow SESSION)", file=sys.stderr)
        return 2
    try:
        a, b = (load_run(text, *parse_run(text, settings.data_dir), settings) for text in (args.a, args.b))
    except (NoHistory, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    drift = compare(a, b, tolerance_ms=int(args.tolerance * 1000))
    if args.json:
        print(json.dumps(as_json(drift), indent=1))
    else:
        print_drift(drift)
    return 0 if drift.explained == drift.difference else 2
