"""`papertape audit`'s recomputation on hand-built rows (expected numbers worked out by hand below); the command
on a real run: tests/integration/test_audit_run.py."""
import ast
from decimal import Decimal as D
from pathlib import Path

import papertape.app.audit as audit_module
from papertape.app.audit import (
    AverageCost,
    EquityRow,
    Fill,
    Funding,
    audit,
    audit_session,
    booking_order,
    expected_fee,
    expected_funding,
    fill_number,
)

RATE = D("0.00055")


def fill(n, ts, side, price, qty, fee, realized, symbol="BTCUSDT", session="s", rate=RATE, order=None):
    return Fill(f"{order or f'{session}-{n}'}:f{n}", ts, session, symbol, side, D(price), D(qty), D(rate), D(fee),
                D(realized))


# A long built in two buys, closed in part, flipped to a short, and the short closed:
#   f1 buy 2 @ 100     cost 200, qty 2                              fee 200 x 0.00055 = 0.11
#   f2 buy 1 @ 103     cost 303, qty 3 (average 101)                fee 103 x 0.00055 = 0.05665
#   f3 sell 1 @ 110    closes 1: 110 - 303 x 1/3 = 9; left 2, cost 202   fee 0.0605
#   f4 sell 4 @ 95     closes 2: 2 x 95 - 202 = -12; opens short 2 @ 95 (cost -190)   fee 380 x 0.00055 = 0.209
#   f5 buy 2 @ 90      closes the short: -(2 x 90) - (-190) = 10          fee 180 x 0.00055 = 0.099
# realized 0 + 0 + 9 - 12 + 10 = 7; fees 0.11 + 0.05665 + 0.0605 + 0.209 + 0.099 = 0.53515
FILLS = [fill(1, 1000, "buy", "100", "2", "0.11", "0"),
         fill(2, 2000, "buy", "103", "1", "0.05665", "0"),
         fill(3, 3000, "sell", "110", "1", "0.0605", "9"),
         fill(4, 4000, "sell", "95", "4", "0.209", "-12"),
         fill(5, 6000, "buy", "90", "2", "0.099", "10")]

# Funding paid by the long and received by the short:
#   at 2500, long 3 @ mark 101.5, rate 0.0001:    -(3 x 101.5 x 0.0001) = -0.03045 (paid)
#   at 5000, short -2 @ mark 3000.123, rate 0.000125:  -(-2 x 3000.123 x 0.000125) = 0.75003075 (received)
FUNDING = [Funding("s:fund:BTCUSDT:2500", 2500, "s", "BTCUSDT", D("0.0001"), D("101.5"), D("3"), D("-0.03045")),
           Funding("s:fund:BTCUSDT:5000", 5000, "s", "BTCUSDT", D("0.000125"), D("3000.123"), D("-2"),
                   D("0.75003075"))]
# cash = 1000 + 7 - 0.53515 + (-0.03045 + 0.75003075) = 1007.18443075
FINAL = EquityRow("s:eq:7000", 7000, "s", D("1007.18443075"), D("0.53515"), D("0.71958075"), D("7"))


def test_average_cost_long_partial_close_flip_and_close_short():
    book = AverageCost()
    assert [book.fill(f.symbol, f.side, f.price, f.qty) for f in FILLS] == [0, 0, 9, -12, 10]
    assert book.qty["BTCUSDT"] == 0 and book.cost["BTCUSDT"] == 0


def test_realized_is_rounded_half_up_per_fill_and_symbols_are_separate():
    book = AverageCost()
    book.fill("A", "buy", D("100.01"), D("1"))
    book.fill("A", "buy", D("100.02"), D("2"))  # cost 300.05 for 3: average 100.0166...
    book.fill("B", "sell", D("7"), D("1"))  # another symbol: its own position
    assert book.fill("A", "sell", D("100.03"), D("1")) == D("0.01333333")  # 100.03 - 100.01666...
    assert book.fill("A", "sell", D("100.00"), D("2")) == D("-0.03333333")  # 200 - 200.0333... (the rest)
    assert book.fill("B", "buy", D("6.999999995"), D("1")) == D("0.00000001")  # 0.000000005: half-up
    # a short closed at a loss: -(1 x 8) - (-7) = -1
    book.fill("B", "sell", D("7"), D("1"))
    assert book.fill("B", "buy", D("8"), D("1")) == D("-1")


def test_fee_and_funding_round_half_up_away_from_zero():
    assert expected_fee(D("61809.5"), D("0.003"), RATE) == D("0.10198568")  # 185.4285 x 0.00055 = 0.101985675
    assert expected_fee(D("2"), D("0.000001"), D("0.0025")) == D("0.00000001")  # exactly half a unit
    assert expected_fee(D("100"), D("1"), D("0")) == 0
    assert expected_funding(D("3"), D("101.5"), D("0.0001")) == D("-0.03045")  # a long pays a positive rate
    assert expected_funding(D("-2"), D("3000.123"), D("0.000125")) == D("0.75003075")  # a short receives it
    assert expected_funding(D("1"), D("100"), D("-0.0001")) == D("0.01")  # a long receives a negative rate
    assert expected_funding(D("1"), D("1"), D("0.000000015")) == D("-0.00000002")  # half a unit, away from 0
    assert str(expected_funding(D("0"), D("100"), D("0.0001"))) == "0E-8"  # no -0


def test_a_consistent_session_passes():
    result = audit_session("s", D(1000), FILLS, FUNDING, [FINAL])
    assert result.mismatches == 0, {k: c.examples for k, c in result.checks.items() if c.mismatches}
    assert {k: c.rows for k, c in result.checks.items()} == {
        "fill ids": 5, "fill fee": 5, "fill realized": 5, "funding amount": 2, "equity cash": 1, "equity fees": 1,
        "equity funding": 1, "equity realized": 1}
    assert result.after_last_equity == 0


def test_every_difference_is_found():
    fills = list(FILLS)
    fills[1] = fill(2, 2000, "buy", "103", "1", "0.05666", "0")  # fee 1e-8 x 1000 too high
    fills[3] = fill(4, 4000, "sell", "95", "4", "0.209", "-11")  # realized 1 too high
    funding = [FUNDING[0], Funding(FUNDING[1].id, 5000, "s", "BTCUSDT", D("0.000125"), D("3000.123"), D("-2"),
                                   D("-0.75003075"))]  # the sign of a received payment turned
    result = audit_session("s", D(1000), fills, funding, [FINAL])
    c = result.checks
    assert (c["fill fee"].mismatches, c["fill fee"].max_diff) == (1, D("0.00001"))
    assert c["fill fee"].examples[0]["id"] == "s-2:f2" and c["fill fee"].examples[0]["expected"] == D("0.05665")
    assert (c["fill realized"].mismatches, c["fill realized"].max_diff) == (1, D(1))
    assert (c["funding amount"].mismatches, c["funding amount"].max_diff) == (1, D("1.5000615"))
    assert c["equity cash"].mismatches == 0  # the equity row agrees with the recomputed values
    # a wrong deposit shows in the cash only; an unknown one is a mismatch too
    wrong = audit_session("s", D(999), FILLS, FUNDING, [FINAL]).checks
    assert (wrong["equity cash"].mismatches, wrong["equity cash"].max_diff) == (1, D(1))
    assert sum(c.mismatches for k, c in wrong.items() if k != "equity cash") == 0
    unknown = audit_session("s", None, FILLS, FUNDING, [FINAL]).checks
    assert unknown["equity cash"].mismatches == 1 and unknown["equity fees"].mismatches == 0


def test_fills_are_taken_in_the_engine_numbering_not_the_text_of_their_ids():
    # at one instant: f9 buys 1 @ 100, then f10 sells 2 @ 110: f10 closes the long (+10) and opens a short.
    # Sorted as text, ":f10" would come first and f9 would be the one closing (a short) with +10.
    f9 = fill(9, 1000, "buy", "100", "1", "0.055", "0", order="s-9")
    f10 = fill(10, 1000, "sell", "110", "2", "0.121", "10", order="s-10")
    assert sorted([f9.id, f10.id]) == ["s-10:f10", "s-9:f9"]
    assert booking_order([f10, f9]) == [f9, f10]
    assert fill_number("s-x-my:fancy:f7:f12") == 12 and fill_number("nonsense") is None
    eq = EquityRow("s:eq:2000", 2000, "s", D("1009.824"), D("0.176"), D("0"), D("10"))
    assert audit_session("s", D(1000), [f10, f9], [], [eq]).mismatches == 0
    # a duplicate number or one out of time order is reported
    dup = fill(10, 3000, "sell", "100", "1", "0.055", "0", order="s-11")
    assert audit_session("s", D(1000), [f9, f10, dup], [], []).checks["fill ids"].mismatches == 1
    early = fill(8, 3000, "sell", "100", "1", "0.055", "0", order="s-12")
    assert audit_session("s", D(1000), [f9, f10, early], [], []).checks["fill ids"].mismatches == 1


def test_equity_snapshots_cover_what_the_engine_had_booked():
    deposit = D(1000)
    fills = FILLS[:3]  # at 1000, 2000, 3000
    # at 2000: f2 (ts 2000) not yet booked (the engine snapshots before the tick at T): fees 0.11
    before = EquityRow("s:eq:2000", 2000, "s", D("999.89"), D("0.11"), D("0"), D("0"))
    # at 2500: f3 (ts 3000, an order arrival) already booked when the snapshot was taken at the tick at 3000,
    # and the funding at 2500: cash 1000 + 9 - (0.11 + 0.05665 + 0.0605) - 0.03045 = 1008.7424
    after = EquityRow("s:eq:2500", 2500, "s", D("1008.7424"), D("0.22715"), D("-0.03045"), D("9"))
    result = audit_session("s", deposit, fills, FUNDING[:1], [before, after])
    assert result.mismatches == 0, {k: c.examples for k, c in result.checks.items() if c.mismatches}
    # a snapshot no prefix of the events explains
    odd = EquityRow("s:eq:2500", 2500, "s", D("1008.7424"), D("0.11"), D("-0.03045"), D("9"))
    result = audit_session("s", deposit, fills, FUNDING[:1], [before, odd])
    assert result.checks["equity fees"].mismatches == 1
    # a last snapshot before the end (a run stopped mid-way) is fine; what it does not cover is noted
    result = audit_session("s", deposit, FILLS, FUNDING, [before])
    assert result.mismatches == 0 and result.after_last_equity == 6


def test_dex_gas_fees_are_taken_as_recorded():
    swap = fill(1, 1000, "buy", "3300", "1", "1.5", "0", symbol="WETH", rate="0")
    eq = EquityRow("s:eq:2000", 2000, "s", D("998.5"), D("1.5"), D("0"), D("0"))
    result = audit_session("s", D(1000), [swap], [], [eq])
    assert result.mismatches == 0 and result.gas_fills == 1 and "gas" in result.checks["fill fee"].note


def test_sessions_are_audited_apart():
    other = [fill(1, 1000, "buy", "10", "1", "0.0055", "0", session="t")]
    results = audit([*FILLS, *other], FUNDING, [FINAL], {"s": D(1000)})
    assert [(r.session, r.mismatches) for r in results] == [("s", 0), ("t", 0)]


def test_the_audit_does_not_use_the_engine_code():
    tree = ast.parse(Path(audit_module.__file__).read_text())
    names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [n for n in names if "core" in n.split(".")], names
