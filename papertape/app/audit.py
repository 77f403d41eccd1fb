"""`papertape audit`: an independent check of the money in the ClickHouse archive.

Reads the views `fills`, `funding` and `equity` (what the recorder wrote) and recomputes, with plain Decimal
arithmetic written here again (nothing is imported from papertape.core):

* each fill's fee = price x qty x fee_rate, rounded half-up to 1e-8;
* each fill's realized P&L by the average-cost method per (session, symbol), over the fills in the order the
  engine booked them: (ts, n), n being the per-session fill number of the fill id `{order_id}:f{n}`;
  rounded half-up to 1e-8 per fill;
* each funding row's amount = -(qty x mark x rate), rounded half-up to 1e-8;
* each equity row's cash (= deposit + sum(realized) - sum(fees) + sum(funding)), fees, funding and realized P&L,
  against the recomputed fills and funding it covers.

An equity snapshot at T covers every fill and funding with ts < T, and may cover some later ones: the engine
takes it when it first sees an event time >= T, after settling the funding and order arrivals due by then. So a
snapshot is matched against the running totals after each event from the first with ts >= T up to the first at
or after the next snapshot (for the last snapshot: up to the end); the one at the end of the tape covers all.

The deposits come from `--config` if given, else from the settings the run's worker was started with
(`worker-settings.json` in the data directory), else from the embedded defaults.
"""
from __future__ import annotations

import json
import sys
from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, localcontext
from pathlib import Path
from typing import Any, Iterable

from infra.archive import Archive, columns, ms, sql_string, tables
from papertape.app.formatting import exact, format_table
from papertape.config import RUN_SETTINGS, Settings, load_settings

ZERO = Decimal(0)
UNIT = Decimal("0.00000001")  # the settle coin's smallest unit
# Python's default context, stated so an audit does not depend on what a caller set.
CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
EXAMPLES = 5  # mismatching rows shown per check
CHUNK = 100_000  # rows per query when reading a table


# --- rows ------------------------------------------------------------------------------------------------------

@dataclass
class Fill:
    id: str
    ts: int  # ms since epoch
    session: str
    symbol: str
    side: str  # buy | sell
    price: Decimal
    qty: Decimal
    fee_rate: Decimal
    fee: Decimal
    realized_pnl: Decimal


@dataclass
class Funding:
    id: str
    ts: int
    session: str
    symbol: str
    rate: Decimal
    mark: Decimal
    qty: Decimal  # signed position: long > 0
    amount: Decimal


@dataclass
class EquityRow:
    id: str
    ts: int
    session: str
    cash: Decimal
    fees: Decimal
    funding: Decimal
    realized_pnl: Decimal


# --- the arithmetic --------------------------------------------------------------------------------------------

def round8(x: Decimal) -> Decimal:
    """Half-up (away from zero on a tie) to 1e-8; -0 comes out as 0."""
    return x.quantize(UNIT, rounding=ROUND_HALF_UP) + ZERO


def expected_fee(price: Decimal, qty: Decimal, fee_rate: Decimal) -> Decimal:
    with localcontext(CONTEXT):
        return round8(price * qty * fee_rate)


def expected_funding(qty: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
    with localcontext(CONTEXT):
        return round8(-(qty * mark * rate))


def fill_number(fill_id: str) -> int | None:
    """n of a fill id `{order_id}:f{n}` (n counts a session's fills), or None if the id is not of that form."""
    _, sep, tail = fill_id.rpartition(":f")
    return int(tail) if sep and tail.isdigit() else None


def booking_order(fills: Iterable[Fill]) -> list[Fill]:
    """The fills in the order the engine booked them: by ts, then by fill number (not by the id's text:
    `:f10` sorts before `:f9`)."""
    return sorted(fills, key=lambda f: (f.ts, fill_number(f.id) or 0, f.id))


class AverageCost:
    """Positions of one session by the average-cost method: per symbol the signed quantity and the signed cost
    (quantity x entry price) of what is still open."""

    def __init__(self) -> None:
        self.qty: dict[str, Decimal] = {}
        self.cost: dict[str, Decimal] = {}

    def fill(self, symbol: str, side: str, price: Decimal, qty: Decimal) -> Decimal:
        """Book a fill; returns the realized P&L it closes, rounded half-up to 1e-8 (before fees)."""
        with localcontext(CONTEXT):
            signed = qty if side == "buy" else -qty
            pos, cost = self.qty.get(symbol, ZERO), self.cost.get(symbol, ZERO)
            realized = ZERO
            if pos and (pos > 0) != (signed > 0):  # reduces, closes or flips the position
                closed = min(abs(signed), abs(pos))
                direction = 1 if pos > 0 else -1
                closed_cost = cost if closed == abs(pos) else cost * closed / abs(pos)  # at the average price
                realized = round8(direction * closed * price - closed_cost)
                pos -= direction * closed
                cost -= closed_cost
                signed += direction * closed  # what is left opens a position the other way
            if signed:
                pos += signed
                cost += signed * price
            if not pos:
                cost = ZERO
            self.qty[symbol], self.cost[symbol] = pos, cost
            return realized


# --- checks ----------------------------------------------------------------------------------------------------

CHECKS = ("fill ids", "fill fee", "fill realized", "funding amount", "equity cash", "equity fees",
          "equity funding", "equity realized")


@dataclass
class Check:
    rows: int = 0
    mismatches: int = 0
    max_diff: Decimal = ZERO
    examples: list[dict] = field(default_factory=list)
    note: str = ""

    def compare(self, row_id: str, recorded: Decimal | None, expected: Decimal | None, **extra: Any) -> bool:
        self.rows += 1
        if recorded is not None and expected is not None and recorded == expected:
            return True
        diff = abs(recorded - expected) if recorded is not None and expected is not None else None
        self.fail(row_id, recorded=recorded, expected=expected, diff=diff, **extra)
        return False

    def fail(self, row_id: str, diff: Decimal | None = None, **details: Any) -> None:
        self.mismatches += 1
        if diff is not None:
            self.max_diff = max(self.max_diff, diff)
        if len(self.examples) < EXAMPLES:
            self.examples.append({"id": row_id, **details, **({"diff": diff} if diff is not None else {})})


@dataclass
class SessionAudit:
    session: str
    deposit: Decimal | None
    checks: dict[str, Check] = field(default_factory=lambda: {name: Check() for name in CHECKS})
    gas_fills: int = 0  # DEX fills: the fee is a flat gas cost, fee_rate 0; taken as recorded
    after_last_equity: int = 0  # fills and funding later than the last equity snapshot covers

    @property
    def mismatches(self) -> int:
        return sum(c.mismatches for c in self.checks.values())


# An event the equity rows cover: (order key, realized, fee, funding); the key sorts events as the engine booked
# them: by ts, funding before fills at one instant, fills by their number.
Event = tuple[tuple, Decimal, Decimal, Decimal]
Totals = tuple[Decimal, Decimal, Decimal]  # (realized, fees, funding) after some events


def audit_session(session: str, deposit: Decimal | None, fills: list[Fill], funding: list[Funding],
                  equity: list[EquityRow]) -> SessionAudit:
    """Recompute one session's fills, funding and equity rows and compare them with what was recorded."""
    out = SessionAudit(session, deposit)
    ordered = booking_order(fills)
    check_fill_ids(fills, ordered, out.checks["fill ids"])
    events = check_fills(ordered, out) + check_funding(funding, out.checks["funding amount"])
    check_equity(out, equity, events)
    return out


def check_fill_ids(fills: list[Fill], ordered: list[Fill], check: Check) -> None:
    """Each fill id is `{order_id}:f{n}` with an n of its own, and the numbers follow the booking order."""
    numbers: dict[int, str] = {}
    for f in fills:
        n = fill_number(f.id)
        check.rows += 1
        if n is None:
            check.fail(f.id, problem="not of the form {order_id}:f{n}")
        elif n in numbers:
            check.fail(f.id, problem=f"fill number {n} also in {numbers[n]}")
        else:
            numbers[n] = f.id
    late = [(a, b) for a, b in zip(ordered, ordered[1:])
            if (fill_number(a.id) or 0) > (fill_number(b.id) or 0)]
    for a, b in late:  # a later-numbered fill at an earlier time: the engine booked them the other way round
        check.fail(b.id, problem=f"numbered before {a.id} but later in time")


def check_fills(ordered: list[Fill], out: SessionAudit) -> list[Event]:
    """Each fill's fee and realized P&L (average cost, in booking order); the fills as events."""
    c = out.checks
    book = AverageCost()
    events: list[Event] = []
    for f in ordered:
        fee = expected_fee(f.price, f.qty, f.fee_rate)
        if not f.fee_rate and f.fee > 0:  # a DEX swap: its fee is the chain's gas, not a rate of the value
            out.gas_fills += 1
            c["fill fee"].rows += 1
            fee = f.fee
        else:
            c["fill fee"].compare(f.id, f.fee, fee, ts=f.ts, price=f.price, qty=f.qty, fee_rate=f.fee_rate)
        realized = book.fill(f.symbol, f.side, f.price, f.qty)
        c["fill realized"].compare(f.id, f.realized_pnl, realized, ts=f.ts, symbol=f.symbol, side=f.side,
                                   price=f.price, qty=f.qty)
        events.append(((f.ts, 1, fill_number(f.id) or 0, f.id), realized, fee, ZERO))
    if out.gas_fills:
        c["fill fee"].note = f"{out.gas_fills} DEX fills: gas fee taken as recorded"
    return events


def check_funding(funding: list[Funding], check: Check) -> list[Event]:
    """Each funding row's amount; the rows as events."""
    events: list[Event] = []
    for r in funding:
        amount = expected_funding(r.qty, r.mark, r.rate)
        check.compare(r.id, r.amount, amount, ts=r.ts, qty=r.qty, mark=r.mark, rate=r.rate)
        events.append(((r.ts, 0, 0, r.id), ZERO, ZERO, amount))  # at one instant the engine settles funding first
    return events


def running_totals(events: list[Event]) -> list[Totals]:
    """(realized, fees, funding) after k events, for k = 0 .. len(events)."""
    totals = [(ZERO, ZERO, ZERO)]
    with localcontext(CONTEXT):
        for _, realized, fee, fund in events:
            r0, f0, u0 = totals[-1]
            totals.append((r0 + realized, f0 + fee, u0 + fund))
    return totals


def equity_fields(totals: Totals, deposit: Decimal | None) -> dict[str, Decimal | None]:
    """What an equity row covering these totals holds (cash unknown without a deposit)."""
    realized, fees, fund = totals
    with localcontext(CONTEXT):
        cash = None if deposit is None else deposit + realized - fees + fund
    return {"cash": cash, "fees": fees, "funding": fund, "realized": realized}


def check_equity(out: SessionAudit, equity: list[EquityRow], events: list[Event]) -> None:
    """Each equity row against the running totals of the events it covers (see the module's docstring)."""
    deposit = out.deposit
    events.sort(key=lambda e: e[0])  # the engine's order
    times = [e[0][0] for e in events]
    totals = running_totals(events)
    rows = sorted(equity, key=lambda e: e.ts)
    for i, e in enumerate(rows):
        recorded = {"cash": e.cash, "fees": e.fees, "funding": e.funding, "realized": e.realized_pnl}
        lo = bisect_left(times, e.ts)  # every event before T is in the snapshot
        hi = bisect_left(times, rows[i + 1].ts) if i + 1 < len(rows) else len(events)
        covered = next((k for k in range(lo, hi + 1)
                        if all(v is None or v == recorded[name]
                               for name, v in equity_fields(totals[k], deposit).items())), None)
        if i == len(rows) - 1:
            out.after_last_equity = len(events) - (covered if covered is not None else len(events))
        k = covered if covered is not None else bisect_left(times, e.ts + 1)  # else: events up to T
        want = equity_fields(totals[k], deposit)
        compare_equity(out, e, recorded, want)
    if out.after_last_equity:
        out.checks["equity cash"].note = f"{out.after_last_equity} fills/funding after the last equity snapshot"
    elif not rows and events:
        out.checks["equity cash"].note = "no equity snapshot yet"


def compare_equity(out: SessionAudit, row: EquityRow, recorded: dict[str, Decimal],
                   want: dict[str, Decimal | None]) -> None:
    for name in ("cash", "fees", "funding", "realized"):
        check = out.checks[f"equity {name}"]
        if name == "cash" and out.deposit is None:
            check.rows += 1
            check.fail(row.id, problem=f"no deposit known for session {out.session}")
        else:
            check.compare(row.id, recorded[name], want[name], ts=row.ts)


# --- reading the archive ---------------------------------------------------------------------------------------

def _read(archive: Archive, table: str, columns: str, where: str, progress) -> list[list]:
    total = int(archive.query(f"SELECT count() FROM {table}{where}")["rows"][0][0])
    rows: list[list] = []
    while len(rows) < total:
        got = archive.query(f"SELECT {columns} FROM {table}{where} ORDER BY session, ts, id "
                            f"LIMIT {CHUNK} OFFSET {len(rows)}")["rows"]
        if not got:
            break
        rows += got
        if total > CHUNK:
            progress(f"  reading {table}: {len(rows)}/{total} rows")
    return rows


def read_archive(archive: Archive, session: str | None, progress) -> tuple[list[Fill], list[Funding], list[EquityRow]]:
    where = f" WHERE session = {sql_string(session)}" if session else ""
    d = Decimal
    # an archive from before migration 002 (venue features) has no funding: read it as none
    have = tables(archive.query)
    equity_cols = columns(archive.query, "equity")
    equity_funding = "toString(funding)" if "funding" in equity_cols else "'0'"
    fills = [Fill(r[0], int(r[1]), r[2], r[3], r[4], d(r[5]), d(r[6]), d(r[7]), d(r[8]), d(r[9]))
             for r in _read(archive, "fills", f"id, {ms('ts')}, session, symbol, side, toString(price), "
                                              "toString(qty), toString(fee_rate), toString(fee), "
                                              "toString(realized_pnl)", where, progress)]
    funding = [] if "funding" not in have else [
               Funding(r[0], int(r[1]), r[2], r[3], d(r[4]), d(r[5]), d(r[6]), d(r[7]))
               for r in _read(archive, "funding", f"id, {ms('ts')}, session, symbol, toString(rate), "
                                                  "toString(mark), toString(qty), toString(amount)", where, progress)]
    equity = [EquityRow(r[0], int(r[1]), r[2], d(r[3]), d(r[4]), d(r[5]), d(r[6]))
              for r in _read(archive, "equity", f"id, {ms('ts')}, session, toString(cash), toString(fees), "
                                                 f"{equity_funding}, toString(realized_pnl)", where, progress)]
    return fills, funding, equity


def deposits(config: Path | None, data_dir: Path) -> tuple[dict[str, Decimal], str]:
    """Session id -> deposit, and where they were found."""
    run_settings = data_dir / RUN_SETTINGS
    if config is not None:
        settings, source = load_settings(config), f"config {config}"
    elif run_settings.exists():
        settings, source = Settings.model_validate_json(run_settings.read_text()), f"the run's {run_settings}"
    else:
        settings, source = load_settings(None), "the embedded defaults"
    return {c.id: Decimal(c.balance) for c in settings.sessions}, source


def audit(fills: list[Fill], funding: list[Funding], equity: list[EquityRow], balances: dict[str, Decimal],
          progress=lambda text: None) -> list[SessionAudit]:
    sessions = sorted({f.session for f in fills} | {u.session for u in funding} | {e.session for e in equity})
    by: dict[str, tuple[list[Fill], list[Funding], list[EquityRow]]] = {s: ([], [], []) for s in sessions}
    for fill in fills:
        by[fill.session][0].append(fill)
    for row in funding:
        by[row.session][1].append(row)
    for snapshot in equity:
        by[snapshot.session][2].append(snapshot)
    out = []
    for s in sessions:
        f, u, e = by[s]
        if len(f) > CHUNK:
            progress(f"  checking {s}: {len(f)} fills, {len(u)} funding rows, {len(e)} equity rows")
        out.append(audit_session(s, balances.get(s), f, u, e))
    return out


# --- the command -----------------------------------------------------------------------------------------------

def report(results: list[SessionAudit], source: str) -> dict:
    return {"ok": all(r.mismatches == 0 for r in results), "deposits_from": source, "sessions": [
        {"session": r.session, "deposit": exact(r.deposit), "mismatches": r.mismatches,
         "checks": [{"check": name, "rows": c.rows, "mismatches": c.mismatches, "max_abs_diff": exact(c.max_diff),
                     "note": c.note, "examples": [{k: exact(v) for k, v in x.items()} for x in c.examples]}
                    for name, c in r.checks.items()]} for r in results]}


def print_report(rep: dict, out=sys.stdout) -> None:
    cols = ["session", "check", "rows", "mismatches", "max_abs_diff", "note"]
    rows = [[s["session"], c["check"], c["rows"], c["mismatches"], c["max_abs_diff"], c["note"]]
            for s in rep["sessions"] for c in s["checks"]]
    print(f"deposits from {rep['deposits_from']}: " + ", ".join(
        f"{s['session']} {s['deposit'] if s['deposit'] is not None else 'unknown'}" for s in rep["sessions"]),
          file=out)
    print(format_table({"columns": cols, "types": ["String", "String", "UInt64", "UInt64", "Decimal", "String"],
                        "rows": rows}, max_width=80), file=out)
    for s in rep["sessions"]:
        for c in s["checks"]:
            if c["mismatches"]:
                print(f"\n{s['session']} / {c['check']}: {c['mismatches']} mismatching rows, first "
                      f"{len(c['examples'])}:", file=out)
                for x in c["examples"]:
                    print("  " + "  ".join(f"{k}={v}" for k, v in x.items()), file=out)
    bad = sum(s["mismatches"] for s in rep["sessions"])
    print(f"\naudit {'FAILED' if bad else 'passed'}: {len(rep['sessions'])} sessions, {bad} mismatches", file=out)


def main(data_dir: Path, session: str | None = None, as_json: bool = False, config: Path | None = None,
         clickhouse_url: str | None = None) -> int:
    """`papertape audit`: 0 if every check holds, 1 on any mismatch, 2 if there is nothing to audit."""
    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        archive = Archive(data_dir, clickhouse_url, timeout=600)  # a whole table, read in chunks
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        fills, funding, equity = read_archive(archive, session, progress)
    except Exception as exc:  # ClickHouse's message is what the user needs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        archive.close()
    if not (fills or funding or equity):
        print(f"error: nothing to audit{f' for session {session}' if session else ''} in {data_dir}",
              file=sys.stderr)
        return 2
    balances, source = deposits(config, data_dir)
    rep = report(audit(fills, funding, equity, balances, progress), source)
    if as_json:
        print(json.dumps(rep, indent=1))
    else:
        print_report(rep)
    return 0 if rep["ok"] else 1
