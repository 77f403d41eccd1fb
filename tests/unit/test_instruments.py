"""Bybit instrument discovery through pybit against a local stand-in for api.bybit.com.

The server answers /v5/market/instruments-info and /v5/market/tickers from the nautilus_trader fixtures in
tests/data/bybit/http/ (see tests/data/PROVENANCE.md), split into pages with Bybit-shaped nextPageCursor values.
Expected values are read from the fixture JSON in each test, or written by hand.
"""
from __future__ import annotations

import copy
import json
import logging
import socket
import threading
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from builders import DATA
from papertape.config import Settings
from papertape.core.instruments import DEFAULT_INSTRUMENTS, Instrument
from streams.bybit.instruments import (
    BybitError,
    BybitUnavailable,
    InstrumentsUnavailable,
    cache_path,
    discover,
    fetch_catalog,
    load_or_discover,
    public_http,
)

HTTP_DATA = DATA / "bybit" / "http"
INFO = "/v5/market/instruments-info"
TICKERS = "/v5/market/tickers"


def fixture(name: str):
    return json.loads((HTTP_DATA / name).read_text())


def fixture_list(name: str) -> list[dict]:
    return fixture(name)["result"]["list"]


def envelope(items: list[dict], cursor: str = "") -> dict:
    return {"retCode": 0, "retMsg": "OK", "result": {"nextPageCursor": cursor, "list": items},
            "retExtInfo": {}, "time": 1700000000000}


# ---------------------------------------------------------------- local Bybit


class FakeBybit:
    """Serves instrument lists page by page (at most `page_cap` per page) and canned answers per path."""

    def __init__(self) -> None:
        self.instruments: dict[str, list[dict]] = {}
        self.page_cap = 1000
        self.canned: dict[str, tuple[int, object]] = {}  # path -> (HTTP status, body)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def queries(self, path: str) -> list[dict[str, str]]:
        return [q for p, q in self.requests if p == path]

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, object]:
        if path in self.canned:
            return self.canned[path]
        if path != INFO:
            return 404, {"retCode": 10001, "retMsg": "not found"}
        items = self.instruments.get(query.get("category", ""), [])
        start = self._start(items, query.get("cursor"))
        page = items[start:start + min(int(query.get("limit", 500)), self.page_cap)]
        more = start + len(page) < len(items)
        # Bybit sends its cursor already percent-encoded; pybit passes it on as is, so it arrives decoded.
        cursor = f"first%3D{page[0]['symbol']}%26last%3D{page[-1]['symbol']}" if more else ""
        return 200, envelope(page, cursor)

    @staticmethod
    def _start(items: list[dict], cursor: str | None) -> int:
        if not cursor:
            return 0
        last = parse_qs(cursor)["last"][0]
        return next(n for n, i in enumerate(items) if i["symbol"] == last) + 1

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append((url.path, query))
                status, body = fake.answer(url.path, query)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.fixture
def bybit():
    fake = FakeBybit()
    yield fake
    fake.close()


@pytest.fixture
def http(bybit):
    return public_http(bybit.endpoint, timeout=5)


def closed_endpoint() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- expectations from the fixture


def expect_linear(raw: dict, inst: Instrument) -> None:
    """Every field exactly as the fixture writes it (same digits, not only the same value)."""
    lot = raw["lotSizeFilter"]
    assert inst.symbol == raw["symbol"]
    assert str(inst.tick_size) == raw["priceFilter"]["tickSize"]
    assert str(inst.lot_step) == lot["qtyStep"]
    assert str(inst.min_qty) == lot["minOrderQty"]
    assert str(inst.min_notional) == lot["minNotionalValue"]
    assert str(inst.max_qty) == lot["maxOrderQty"]
    assert str(inst.max_leverage) == raw["leverageFilter"]["maxLeverage"]
    assert inst.funding_interval_min == raw["fundingInterval"]
    assert (inst.settle_coin, inst.base_coin, inst.quote_coin) == (raw["settleCoin"], raw["baseCoin"],
                                                                    raw["quoteCoin"])
    assert (inst.status, inst.category) == (raw["status"], "linear")
    assert all(isinstance(v, Decimal) for v in (inst.tick_size, inst.lot_step, inst.min_qty, inst.min_notional,
                                                inst.max_qty, inst.max_leverage))


def expect_spot(raw: dict, inst: Instrument) -> None:
    lot = raw["lotSizeFilter"]
    assert inst.symbol == raw["symbol"]
    assert str(inst.tick_size) == raw["priceFilter"]["tickSize"]
    assert str(inst.lot_step) == lot["basePrecision"]
    assert str(inst.min_qty) == lot["minOrderQty"]
    assert str(inst.min_notional) == lot["minOrderAmt"]
    assert str(inst.max_qty) == lot["maxOrderQty"]
    assert (inst.max_leverage, inst.funding_interval_min, inst.category) == (Decimal(1), 0, "spot")
    assert (inst.settle_coin, inst.base_coin, inst.quote_coin) == (raw["quoteCoin"], raw["baseCoin"],
                                                                    raw["quoteCoin"])
    assert inst.status == raw["status"]


def variant(raw: dict, **changes) -> dict:
    """DERIVED IN THE TEST, not recorded: a fixture instrument with the named fields changed."""
    out = copy.deepcopy(raw)
    out.update(changes)
    return out


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("name", ["nautilus_py/linear/instruments.json",
                                  "nautilus_rust/http_get_instruments_linear.json",
                                  "nautilus_rust/http_get_instruments_linear_symbol_type.json"])
def test_linear_fields_parsed_exactly(bybit, http, name):
    raw = fixture_list(name)
    bybit.instruments["linear"] = raw
    got = discover(http)
    assert [i.symbol for i in got] == sorted(r["symbol"] for r in raw)
    by_symbol = {i.symbol: i for i in got}
    for r in raw:
        expect_linear(r, by_symbol[r["symbol"]])
    assert bybit.queries(INFO) == [{"category": "linear", "limit": "1000"}]
    assert bybit.queries(TICKERS) == []  # no turnover filter, no tickers request


def test_btcusdt_by_hand(bybit, http):
    bybit.instruments["linear"] = fixture_list("nautilus_py/linear/instruments.json")
    btc = {i.symbol: i for i in discover(http)}["BTCUSDT"]
    assert btc == Instrument("BTCUSDT", Decimal("0.10"), Decimal("0.001"), Decimal("0.001"), Decimal(5),
                             "USDT", Decimal(100), "linear", 480, Decimal(100), "BTC", "USDT", "Trading")
    assert btc.on_tick(Decimal("65000.30")) and not btc.on_tick(Decimal("65000.35"))


def test_spot_on_request(bybit, http):
    for name in ["nautilus_py/spot/instruments.json", "nautilus_rust/http_get_instruments_spot.json"]:
        raw = fixture_list(name)
        bybit.instruments["spot"] = raw
        got = {i.symbol: i for i in discover(http, category="spot")}
        assert sorted(got) == sorted(r["symbol"] for r in raw)
        for r in raw:
            expect_spot(r, got[r["symbol"]])
    assert {q["category"] for q in bybit.queries(INFO)} == {"spot"}
    assert discover(http, category="spot", settle_coin="USDC") == []  # both pairs are quoted in USDT


def test_unknown_category_refused(http):
    with pytest.raises(ValueError, match="category"):
        discover(http, category="option")


# ---------------------------------------------------------------- kinds and statuses


@pytest.fixture
def mixed_linear(bybit):
    """BTCUSDT and ETHUSDT from the fixture, the rust fixture's inverse perpetual, and DERIVED variants."""
    btc, eth = fixture_list("nautilus_py/linear/instruments.json")
    items = [
        btc, eth,
        fixture_list("nautilus_rust/http_get_instruments_inverse.json")[0],  # InversePerpetual, settles in BTC
        variant(eth, symbol="SOLUSDT", status="PreLaunch"),
        variant(eth, symbol="XRPUSDT", status="Closed"),
        variant(btc, symbol="BTCPERP", quoteCoin="USDC", settleCoin="USDC"),
        variant(btc, symbol="BTCUSDT-27DEC24", contractType="LinearFutures"),
    ]
    bybit.instruments["linear"] = items
    return items


def test_only_trading_usdt_perpetuals_by_default(http, mixed_linear):
    assert [i.symbol for i in discover(http)] == ["BTCUSDT", "ETHUSDT"]


def test_other_statuses_on_request(http, mixed_linear):
    got = discover(http, statuses={"Trading", "PreLaunch"})
    assert [(i.symbol, i.status) for i in got] == [("BTCUSDT", "Trading"), ("ETHUSDT", "Trading"),
                                                   ("SOLUSDT", "PreLaunch")]


def test_usdc_perpetuals_on_request(http, mixed_linear):
    got = discover(http, settle_coin="USDC")
    assert len(got) == 1
    expect_linear(mixed_linear[5], got[0])
    assert got[0].settle_coin == "USDC"


def test_catalog_counts_what_it_ignores(http, mixed_linear):
    cat = fetch_catalog(http)
    assert sorted(i.symbol for i in cat.instruments) == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    assert cat.ignored == 3  # inverse, USDC, dated future
    assert cat.skipped == {}


# ---------------------------------------------------------------- broken entries


def test_missing_and_invalid_fields_are_skipped_with_reasons(bybit, http, caplog):
    old = fixture("nautilus_py/http_market_instruments_linear.json")  # bare list, older schema
    btc, eth = fixture_list("nautilus_py/linear/instruments.json")
    bad_tick = variant(btc, symbol="AAAUSDT", priceFilter={"tickSize": "0"})
    bad_step = variant(btc, symbol="BBBUSDT", lotSizeFilter={**btc["lotSizeFilter"], "qtyStep": "abc"})
    no_funding = variant(btc, symbol="CCCUSDT")
    del no_funding["fundingInterval"]
    no_leverage = variant(btc, symbol="DDDUSDT", leverageFilter={"minLeverage": "1"})
    old_items = [variant(o, symbol=f"OLD{o['symbol']}") for o in old]
    bybit.instruments["linear"] = [bad_tick, eth, bad_step, no_funding, no_leverage, *old_items, eth]
    with caplog.at_level(logging.WARNING, logger="streams.bybit.instruments"):
        cat = fetch_catalog(http)
    assert [i.symbol for i in cat.instruments] == ["ETHUSDT"]
    expect_linear(eth, cat.instruments[0])
    assert cat.skipped == {
        "AAAUSDT": "invalid priceFilter.tickSize=0 (must be > 0)",
        "BBBUSDT": "invalid lotSizeFilter.qtyStep='abc'",
        "CCCUSDT": "missing or invalid fundingInterval=None",
        "DDDUSDT": "missing leverageFilter.maxLeverage",
        "OLDBTCUSDT": "missing lotSizeFilter.minNotionalValue",
        "OLDETHUSDT": "missing lotSizeFilter.minNotionalValue",
        "ETHUSDT": "listed twice",
    }
    assert "skipped 7 instruments" in caplog.text


def test_missing_max_order_qty_is_none(bybit, http):
    btc = fixture_list("nautilus_py/linear/instruments.json")[0]
    lot = {k: v for k, v in btc["lotSizeFilter"].items() if k != "maxOrderQty"}
    bybit.instruments["linear"] = [variant(btc, lotSizeFilter=lot)]
    assert discover(http)[0].max_qty is None


# ---------------------------------------------------------------- pagination


def test_pages_of_one_follow_the_cursor(bybit, http):
    raw = (fixture_list("nautilus_py/linear/instruments.json")
           + fixture_list("nautilus_rust/http_get_instruments_linear_symbol_type.json"))
    bybit.instruments["linear"] = raw
    bybit.page_cap = 1
    got = {i.symbol: i for i in discover(http)}
    for r in raw:
        expect_linear(r, got[r["symbol"]])
    symbols = [r["symbol"] for r in raw]  # BTCUSDT, ETHUSDT, TSLAUSDT: three pages
    expected_cursors = [None] + [f"first={s}&last={s}" for s in symbols[:-1]]
    assert [q.get("cursor") for q in bybit.queries(INFO)] == expected_cursors
    assert all(q["limit"] == "1000" and q["category"] == "linear" for q in bybit.queries(INFO))


def test_cursor_loop_is_an_error(bybit, http):
    btc = fixture_list("nautilus_py/linear/instruments.json")[0]
    bybit.canned[INFO] = (200, envelope([btc], cursor="first%3DBTCUSDT%26last%3DBTCUSDT"))
    with pytest.raises(BybitError, match="cursor loop"):
        discover(http)
    assert len(bybit.queries(INFO)) == 2


def test_null_cursor_ends(bybit, http):
    body = fixture("nautilus_rust/http_get_instruments_linear.json")  # "nextPageCursor": null
    bybit.canned[INFO] = (200, body)
    assert [i.symbol for i in discover(http)] == ["BTCUSDT", "ETHUSDT"]
    assert len(bybit.queries(INFO)) == 1


# LOAD-ONLY SYNTHETIC DATA: 700 relabelled copies of the fixture's BTCUSDT, the size of Bybit's real linear
# USDT universe. Checks pagination at scale, not any real instrument's specs.
@pytest.mark.parametrize("page_cap, pages", [(1000, 1), (300, 3)])
def test_700_instruments_load_only(bybit, http, page_cap, pages):
    btc = fixture_list("nautilus_py/linear/instruments.json")[0]
    synthetic = [variant(btc, symbol=f"SYN{n:03d}USDT", baseCoin=f"SYN{n:03d}") for n in range(700)]
    bybit.instruments["linear"] = synthetic[::-1]  # server order is not symbol order
    bybit.page_cap = page_cap
    got = discover(http)
    assert [i.symbol for i in got] == [f"SYN{n:03d}USDT" for n in range(700)]
    for r, inst in zip(synthetic, got):
        expect_linear(r, inst)
    assert len(bybit.queries(INFO)) == pages


# ---------------------------------------------------------------- universe filters


@pytest.fixture
def with_tickers(bybit):
    bybit.instruments["linear"] = fixture_list("nautilus_py/linear/instruments.json")
    bybit.canned[TICKERS] = (200, fixture("nautilus_py/linear/tickers.json"))
    return {t["symbol"]: Decimal(t["turnover24h"]) for t in fixture_list("nautilus_py/linear/tickers.json")}


def test_turnover_filter(bybit, http, with_tickers):
    btc_turnover = with_tickers["BTCUSDT"]  # the fixture has no ETHUSDT ticker
    assert [i.symbol for i in discover(http, min_turnover_24h=btc_turnover)] == ["BTCUSDT"]
    assert discover(http, min_turnover_24h=btc_turnover + Decimal("0.00000001")) == []
    assert [i.symbol for i in discover(http, min_turnover_24h=Decimal(0))] == ["BTCUSDT"]  # no ticker: out
    assert bybit.queries(TICKERS) == [{"category": "linear"}] * 3


def test_include_and_exclude(http, with_tickers, caplog):
    assert [i.symbol for i in discover(http, include=["ethusdt"])] == ["ETHUSDT"]
    assert [i.symbol for i in discover(http, exclude=["BTCUSDT"])] == ["ETHUSDT"]
    assert [i.symbol for i in discover(http, include=["BTCUSDT", "ETHUSDT"], exclude=["BTCUSDT"])] == ["ETHUSDT"]
    with caplog.at_level(logging.WARNING, logger="streams.bybit.instruments"):
        assert discover(http, include=["XRPUSDT"]) == []
    assert "XRPUSDT" in caplog.text


# ---------------------------------------------------------------- errors


def test_ret_code_error(bybit, http):
    bybit.canned[INFO] = (200, {"retCode": 10001, "retMsg": "params error: category is invalid",
                                "result": {}, "retExtInfo": {}, "time": 1700000000000})
    with pytest.raises(BybitError, match="retCode=10001 params error: category is invalid"):
        discover(http)


def test_http_status_error(bybit, http):
    bybit.canned[INFO] = (403, {"retCode": 10009, "retMsg": "forbidden"})
    with pytest.raises(BybitUnavailable, match="Bybit unreachable"):
        discover(http)


def test_answer_without_list(bybit, http):
    bybit.canned[INFO] = (200, {"retCode": 0, "retMsg": "OK", "result": {}})
    with pytest.raises(BybitError, match="without result.list"):
        discover(http)


def test_unreachable():
    with pytest.raises(BybitUnavailable):
        discover(public_http(closed_endpoint(), timeout=2))


# ---------------------------------------------------------------- cache


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def no_http():
    raise AssertionError("a fresh cache must not touch Bybit")


def test_cache_written_then_used_fresh(bybit, with_tickers, tmp_path):
    path = cache_path(tmp_path / "data")
    assert path == tmp_path / "data" / "instruments-linear-USDT.json"
    clock = Clock(1_700_000_000.5)
    first = load_or_discover(lambda: public_http(bybit.endpoint), path, clock=clock)
    raw = fixture_list("nautilus_py/linear/instruments.json")
    for r, inst in zip(raw, first):
        expect_linear(r, inst)
    doc = json.loads(path.read_text())
    assert (doc["fetched_at_ms"], doc["category"], doc["settle_coin"]) == (1_700_000_000_500, "linear", "USDT")
    assert [i["symbol"] for i in doc["instruments"]] == ["BTCUSDT", "ETHUSDT"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    asked = len(bybit.requests)

    clock.t += 86_400  # exactly max_age_s: still fresh
    assert load_or_discover(no_http, path, clock=clock) == first
    # the cache keeps the whole catalog and the turnover, so other filters need no request either
    assert [i.symbol for i in load_or_discover(no_http, path, clock=clock, exclude=["BTCUSDT"])] == ["ETHUSDT"]
    hot = load_or_discover(no_http, path, clock=clock, min_turnover_24h=with_tickers["BTCUSDT"])
    assert [i.symbol for i in hot] == ["BTCUSDT"]
    assert len(bybit.requests) == asked


def test_stale_cache_is_refetched(bybit, with_tickers, tmp_path):
    path = cache_path(tmp_path)
    clock = Clock(1_700_000_000)
    load_or_discover(lambda: public_http(bybit.endpoint), path, max_age_s=60, clock=clock)
    clock.t += 61
    bybit.instruments["linear"] = fixture_list("nautilus_rust/http_get_instruments_linear_symbol_type.json")
    got = load_or_discover(lambda: public_http(bybit.endpoint), path, max_age_s=60, clock=clock)
    assert [i.symbol for i in got] == ["TSLAUSDT"]
    assert json.loads(path.read_text())["fetched_at_ms"] == 1_700_000_061_000
    assert len(bybit.queries(INFO)) == 2


def test_unreachable_falls_back_to_stale_cache(bybit, with_tickers, tmp_path, caplog):
    path = cache_path(tmp_path)
    clock = Clock(1_700_000_000)
    fresh = load_or_discover(lambda: public_http(bybit.endpoint), path, clock=clock)
    clock.t += 3 * 86_400
    down = closed_endpoint()
    with caplog.at_level(logging.WARNING, logger="streams.bybit.instruments"):
        stale = load_or_discover(lambda: public_http(down, timeout=2), path, clock=clock)
    assert stale == fresh
    assert "stale instrument cache" in caplog.text and "72.0 h old" in caplog.text
    assert json.loads(path.read_text())["fetched_at_ms"] == 1_700_000_000_000  # cache left as it was


def test_nothing_available_is_a_clear_error(tmp_path):
    down = closed_endpoint()
    with pytest.raises(InstrumentsUnavailable, match="no usable cache"):
        load_or_discover(lambda: public_http(down, timeout=2), cache_path(tmp_path))


def test_cache_of_another_market_or_corrupt_is_ignored(bybit, with_tickers, tmp_path):
    path = cache_path(tmp_path)
    load_or_discover(lambda: public_http(bybit.endpoint), path)
    with pytest.raises(InstrumentsUnavailable):  # USDC asked, USDT cached: not a fallback
        load_or_discover(lambda: public_http(closed_endpoint(), timeout=2), path, settle_coin="USDC")
    path.write_text("{not json")
    got = load_or_discover(lambda: public_http(bybit.endpoint), path)
    assert [i.symbol for i in got] == ["BTCUSDT", "ETHUSDT"]


# ---------------------------------------------------------------- client and wiring


def test_public_http_points_at_mainnet_or_the_given_endpoint():
    assert public_http().endpoint == "https://api.bybit.com"
    assert public_http("http://127.0.0.1:9/").endpoint == "http://127.0.0.1:9"


def test_discovered_instruments_fit_settings(bybit, http):
    bybit.instruments["linear"] = fixture_list("nautilus_py/linear/instruments.json")
    found = discover(http)
    settings = Settings(instruments=found)
    assert settings.instrument_map() == {i.symbol: i for i in found}
    as_toml = [{"symbol": "BTCUSDT", "tick_size": "0.10", "lot_step": "0.001", "min_qty": "0.001",
                "min_notional": "5"}]
    assert Settings(instruments=as_toml).instruments == [DEFAULT_INSTRUMENTS["BTCUSDT"]]


def test_round_price():
    btc = DEFAULT_INSTRUMENTS["BTCUSDT"]  # tick 0.10
    assert btc.round_price(Decimal("65000.26")) == Decimal("65000.30")
    assert btc.round_price(Decimal("65000.25")) == Decimal("65000.20")  # half to even
    assert btc.round_price(Decimal("65000.29"), ROUND_DOWN) == Decimal("65000.20")
    assert btc.round_price(Decimal("65000.21"), ROUND_UP) == Decimal("65000.30")
    assert btc.round_qty_down(Decimal("0.0129")) == Decimal("0.012")


@pytest.mark.parametrize("symbol", ["BTCUSD_PERP", "ETHUSD_250627"])
def test_an_inverse_contract_configured_as_linear_is_refused(symbol):
    """Issue 19: an inverse (coin-margined) contract priced as linear misstates fees and P&L by orders of
    magnitude: a settings file naming one is refused with the reason."""
    with pytest.raises(ValueError, match="inverse \\(coin-margined\\) contract"):
        Settings(instruments=[{"symbol": symbol, "tick_size": "0.1", "lot_step": "1", "min_qty": "1",
                               "min_notional": "0"}])
    for linear in ("BTCUSDT", "BTCUSDC", "BTCUSDT_250627", "BTCPERP", "BTCUSD"):  # BTCUSD: Coinbase's pair
        assert Settings(instruments=[{"symbol": linear, "tick_size": "0.1", "lot_step": "1", "min_qty": "1",
                                      "min_notional": "0"}]).instruments[0].symbol == linear


def test_discovery_without_the_tickers_endpoint_when_no_turnover_filter_is_asked(bybit, tmp_path, caplog):
    """Issue 19: `papertape instruments` failed with no universe when /v5/market/tickers was unavailable, although
    no turnover filter was asked for. The instruments come from instruments-info alone; the cache says it has no
    turnover, so a turnover filter later asks Bybit again, and says why when it cannot."""
    bybit.instruments["linear"] = fixture_list("nautilus_py/linear/instruments.json")
    path = cache_path(tmp_path)  # the stand-in has no tickers here: /v5/market/tickers answers 404
    with caplog.at_level(logging.WARNING, logger="streams.bybit.instruments"):
        got = load_or_discover(lambda: public_http(bybit.endpoint), path)
    assert [i.symbol for i in got] == ["BTCUSDT", "ETHUSDT"]
    assert "tickers unavailable" in caplog.text
    assert json.loads(path.read_text())["turnover_24h"] is None
    with pytest.raises(InstrumentsUnavailable, match="turnover filter needs Bybit's tickers"):
        load_or_discover(lambda: public_http(bybit.endpoint), path, min_turnover_24h=Decimal(1))
