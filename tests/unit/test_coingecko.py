"""CoinGecko / DefiLlama token prices (streams/sources/coingecko.py), against httpx.MockTransport.

No real recorded responses were found under a licence that allows copying, so the bodies below are built in the
shapes CoinGecko and DefiLlama document: simple/price `{id: {"usd": n, "last_updated_at": s}}` and
prices/current `{"coins": {"coingecko:id": {"price": n, "symbol": ..., "timestamp": s, "confidence": c}}}`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

import httpx
import pytest

from streams.sources.coingecko import (
    DEFAULT_TOKENS,
    Backoff,
    CoinGecko,
    DefiLlama,
    FeedConfig,
    PriceFeed,
    Quote,
    Token,
    default_sources,
    exact_price,
    load_api_key,
)

T0 = 1_700_000_100.0  # the fake wall clock at the start of each test
UPDATED = 1_700_000_090  # the sources' timestamp of their prices: 10 s before T0
IDS = ["weth", "usd-coin", "dai", "wrapped-bitcoin", "uniswap", "aave", "chainlink", "matic-network", "arbitrum"]
KEY = "CG-s3cr3t-k3y-value"


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


Handler = Callable[[httpx.Request], httpx.Response]


class Venues:
    """A MockTransport answering api.coingecko.com and coins.llama.fi with swappable handlers; keeps requests."""

    def __init__(self, coingecko: Handler, defillama: Handler | None = None) -> None:
        self.coingecko = coingecko
        self.defillama = defillama or _down
        self.requests: list[httpx.Request] = []
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self._route))

    def _route(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.coingecko if "coingecko.com" in request.url.host else self.defillama
        return handler(request)

    def count(self, host_part: str) -> int:
        return sum(host_part in r.url.host for r in self.requests)


def _down(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, text="down")


def cg_text(prices: dict[str, str], updated: int = UPDATED) -> str:
    """A simple/price body with each price written as the given JSON number text."""
    rows = [f'"{i}": {{"usd": {p}, "last_updated_at": {updated}}}' for i, p in prices.items()]
    return "{" + ", ".join(rows) + "}"


def llama_text(prices: dict[str, str], updated: int = UPDATED) -> str:
    rows = [f'"coingecko:{i}": {{"price": {p}, "symbol": "X", "timestamp": {updated}, "confidence": 0.99}}'
            for i, p in prices.items()]
    return '{"coins": {' + ", ".join(rows) + "}}"


def ok(text: str) -> Handler:
    return lambda request: httpx.Response(200, text=text, headers={"content-type": "application/json"})


ALL_CG = {i: f"{n}.5" for n, i in enumerate(IDS, start=1)}  # weth 1.5, usd-coin 2.5, ...


def feed_for(venues: Venues, clock: Clock, *, api_key: str | None = None, config: FeedConfig | None = None,
             rand: Callable[[], float] = lambda: 0.0) -> PriceFeed:
    return PriceFeed(default_sources(venues.client, api_key=api_key), config, clock=clock, rand=rand)


def by_symbol(frames):
    return {f.symbol: f for f in frames}


# --- CoinGecko request and exact prices -------------------------------------------------------------------------

async def test_one_bulk_request_prices_every_token():
    venues = Venues(ok(cg_text(ALL_CG)))
    clock = Clock()
    feed = feed_for(venues, clock)
    frames = await feed.poll()

    assert len(venues.requests) == 1
    req = venues.requests[0]
    assert (req.url.host, req.url.path) == ("api.coingecko.com", "/api/v3/simple/price")
    assert req.url.params["ids"].split(",") == IDS
    assert req.url.params["vs_currencies"] == "usd"
    assert req.url.params["include_last_updated_at"] == "true"
    assert req.url.params["precision"] == "full"

    assert [f.symbol for f in frames] == [t.symbol for t in DEFAULT_TOKENS]
    weth = by_symbol(frames)["WETH"]
    assert weth.status == "live" and weth.venue == "coingecko"
    assert weth.ts == UPDATED * 1000 and weth.id == f"coingecko:WETH:{UPDATED * 1000}"
    assert weth.ticker.last == weth.ticker.mark == "1.5"
    assert weth.recv_ts == int(T0 * 1e9)
    assert by_symbol(frames)["ARB"].ticker.mark == "9.5"


async def test_prices_keep_the_sources_digits():
    # 19 significant digits: a float would round it (float('2345.678901234567891') -> 2345.678901234568).
    venues = Venues(ok(cg_text({"weth": "2345.678901234567891", "usd-coin": "0.99985", "dai": "1.00010",
                                "uniswap": "1.2e-05", "aave": "1.5E+2"})))
    feed = feed_for(venues, Clock(), config=FeedConfig(tokens=tuple(t for t in DEFAULT_TOKENS
                                                                       if t.cg_id in {"weth", "usd-coin", "dai",
                                                                                      "uniswap", "aave"})))
    marks = {f.symbol: f.ticker.mark for f in await feed.poll()}
    assert marks == {"WETH": "2345.678901234567891", "USDC": "0.99985", "DAI": "1.00010", "UNI": "0.000012",
                     "AAVE": "150"}


@pytest.mark.parametrize("raw, expected", [
    ("67187.3358936566", "67187.3358936566"),
    ("1.2e-05", "0.000012"),
    ("3E+3", "3000"),
    ("0.0000000000000000015", "0.000000000000000002"),  # 19 decimals: half-even to PriceStr's 18
    ("99999999999999999999", "99999999999999999999"),  # 20 integer digits: the most PriceStr holds
    ("100000000000000000000", None),
    ("0", None), ("0.0", None), ("-3.5", None), ("NaN", None), ("Infinity", None), ("1e999999999", None),
    ("1e-30", None), ("abc", None), ("1_000", None), ("", None), (None, None), (True, None), (12, None),
])
def test_exact_price(raw, expected):
    assert exact_price(raw) == expected


# --- cache and fallback -----------------------------------------------------------------------------------------

async def test_ttl_cache_makes_no_request_within_ttl():
    venues = Venues(ok(cg_text(ALL_CG)))
    clock = Clock()
    feed = feed_for(venues, clock)  # ttl 45 s
    assert await feed.refresh() is True
    clock.t = T0 + 44.9
    assert await feed.refresh() is False
    await feed.poll()
    assert len(venues.requests) == 1
    clock.t = T0 + 45.0
    await feed.poll()
    assert len(venues.requests) == 2


async def test_429_retry_after_falls_back_and_waits():
    calls = []

    def limited(request):
        calls.append(request)
        return httpx.Response(429, headers={"retry-after": "120"}, text='{"status": {"error_code": 429}}')

    venues = Venues(limited, ok(llama_text({i: "7.25" for i in IDS})))
    clock = Clock()
    feed = feed_for(venues, clock)
    frames = await feed.poll()
    assert venues.count("coingecko") == 1 and venues.count("llama") == 1
    assert {f.venue for f in frames} == {"defillama"} and {f.ticker.mark for f in frames} == {"7.25"}
    assert by_symbol(frames)["DAI"].id == f"defillama:DAI:{UPDATED * 1000}"
    assert feed.backoff["coingecko"].until == T0 + 120

    clock.t = T0 + 46  # cache expired, CoinGecko still inside Retry-After
    await feed.poll()
    assert venues.count("coingecko") == 1 and venues.count("llama") == 2

    venues.coingecko = ok(cg_text(ALL_CG, updated=UPDATED + 120))
    clock.t = T0 + 120
    frames = await feed.poll()
    assert venues.count("coingecko") == 2 and venues.count("llama") == 2
    assert {f.venue for f in frames} == {"coingecko"}
    assert feed.backoff["coingecko"].failures == 0  # a success resets the backoff: the next failure waits 1 s


async def test_timeout_falls_back_to_defillama():
    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    venues = Venues(slow, ok(llama_text({i: "3001.2" for i in IDS})))
    feed = feed_for(venues, Clock())
    frames = await feed.poll()
    llama = [r for r in venues.requests if "llama" in r.url.host]
    assert len(llama) == 1
    assert llama[0].url.path == "/prices/current/" + ",".join(f"coingecko:{i}" for i in IDS)
    assert all(f.status == "live" and f.venue == "defillama" and f.ticker.last == "3001.2" for f in frames)
    assert feed.backoff["coingecko"].until == T0 + 1  # first failure, no jitter: 1 s


async def test_both_sources_down_gives_unavailable_frames():
    def refused(request):
        raise httpx.ConnectError("connection refused", request=request)

    venues = Venues(_down, refused)
    clock = Clock()
    frames = await feed_for(venues, clock).poll()
    assert len(frames) == len(DEFAULT_TOKENS)
    for f in frames:
        assert f.status == "unavailable"
        assert f.ticker is None and f.bid is None and f.ask is None and f.trades == []
        assert f.ts == int(T0 * 1000) and f.venue == "coingecko"


async def test_exponential_backoff_with_jitter_and_retry_timing():
    venues = Venues(_down)
    clock = Clock()
    feed = PriceFeed([CoinGecko(venues.client)], clock=clock, rand=lambda: 0.5)  # jitter 0.2 * 0.5 = +10 %
    await feed.refresh()
    assert feed.backoff["coingecko"].until == pytest.approx(T0 + 1.1)
    clock.t = T0 + 1.0
    assert await feed.refresh() is False  # inside the backoff: no round, no request
    assert len(venues.requests) == 1
    clock.t = T0 + 1.1
    await feed.refresh()
    assert len(venues.requests) == 2
    assert feed.backoff["coingecko"].until == pytest.approx(T0 + 1.1 + 2.2)
    clock.t = T0 + 3.3
    await feed.refresh()
    assert feed.backoff["coingecko"].until == pytest.approx(T0 + 3.3 + 4.4)


def test_backoff_caps_and_resets():
    b = Backoff(max_s=60.0, jitter=0.2)
    delays = [b.fail(0.0, None, lambda: 0.0) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.fail(0.0, 7.5, lambda: 0.9) == 7.5  # Retry-After wins over the exponential
    b.ok()
    assert b.fail(10.0, None, lambda: 1.0) == pytest.approx(1.2) and b.until == pytest.approx(11.2)


# --- stale and bad prices ---------------------------------------------------------------------------------------

async def test_price_older_than_max_age_is_unavailable_not_reused():
    venues = Venues(ok(cg_text(ALL_CG)))  # prices stamped T0 - 10
    clock = Clock()
    feed = feed_for(venues, clock)  # max_age 300 s
    assert all(f.status == "live" for f in await feed.poll())

    venues.coingecko = _down  # every later poll fails, so only the held prices could be shown
    clock.t = T0 + 289  # age 299 s
    frames = await feed.poll()
    assert all(f.status == "live" and f.ts == UPDATED * 1000 for f in frames)
    clock.t = T0 + 291  # age 301 s
    frames = await feed.poll()
    assert all(f.status == "unavailable" and f.ticker is None for f in frames)
    assert {f.ts for f in frames} == {int((T0 + 291) * 1000)}


async def test_stale_answer_is_not_taken_and_fallback_is_asked():
    old = int(T0) - 301
    venues = Venues(ok(cg_text({"weth": "3000"}, updated=old)), ok(llama_text({"weth": "3010.5"})))
    config = FeedConfig(tokens=(Token("WETH", "weth"),))
    frames = await feed_for(venues, Clock(), config=config).poll()
    assert frames[0].venue == "defillama" and frames[0].ticker.mark == "3010.5"

    venues = Venues(ok(cg_text({"weth": "3000"}, updated=old)), ok(llama_text({"weth": "3010.5"}, updated=old)))
    frames = await feed_for(venues, Clock(), config=config).poll()
    assert frames[0].status == "unavailable"


async def test_bad_token_values_make_only_those_tokens_unavailable():
    body = ('{"weth": {"usd": 3001.25, "last_updated_at": %d},'
            ' "usd-coin": {"usd": -1, "last_updated_at": %d},'
            ' "dai": {"usd": NaN, "last_updated_at": %d},'
            ' "wrapped-bitcoin": {"usd": 0, "last_updated_at": %d},'
            ' "uniswap": {"usd": "n/a", "last_updated_at": %d},'
            ' "aave": {"usd": null, "last_updated_at": %d},'
            ' "chainlink": {"usd": 14.5},'
            ' "matic-network": "garbage"}' % ((UPDATED,) * 6))  # arbitrum: absent
    bad = IDS[1:]
    venues = Venues(ok(body), ok(llama_text({"dai": "0.9999"})))
    frames = by_symbol(await feed_for(venues, Clock()).poll())

    llama = [r for r in venues.requests if "llama" in r.url.host]
    assert llama[0].url.path == "/prices/current/" + ",".join(f"coingecko:{i}" for i in bad)  # only the rest
    assert frames["WETH"].ticker.mark == "3001.25" and frames["WETH"].venue == "coingecko"
    assert frames["DAI"].ticker.mark == "0.9999" and frames["DAI"].venue == "defillama"
    unavailable = {s for s, f in frames.items() if f.status == "unavailable"}
    assert unavailable == {"USDC", "WBTC", "UNI", "AAVE", "LINK", "MATIC", "ARB"}


async def test_malformed_json_backs_off_the_source_and_falls_back():
    venues = Venues(ok('{"weth": {"usd": 3001.2, "last_upd'), ok(llama_text({"weth": "2999.75"})))
    config = FeedConfig(tokens=(Token("WETH", "weth"),))
    feed = feed_for(venues, Clock(), config=config)
    frames = await feed.poll()
    assert frames[0].venue == "defillama" and frames[0].ticker.mark == "2999.75"
    assert feed.backoff["coingecko"].failures == 1

    venues = Venues(ok("[1, 2]"), ok('{"prices": {}}'))
    frames = await feed_for(venues, Clock(), config=config).poll()
    assert frames[0].status == "unavailable"


# --- API key ----------------------------------------------------------------------------------------------------

async def test_api_key_sent_as_header_never_logged_or_shown(caplog):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log at DEBUG too
    venues = Venues(ok(cg_text(ALL_CG)))
    clock = Clock()
    feed = feed_for(venues, clock, api_key=KEY)
    await feed.poll()
    req = venues.requests[0]
    assert req.headers["x-cg-demo-api-key"] == KEY
    assert KEY not in str(req.url)

    venues.coingecko = lambda request: httpx.Response(429, headers={"retry-after": "5"})
    clock.t = T0 + 50
    await feed.poll()
    venues.coingecko = _down
    clock.t = T0 + 100
    await feed.poll()

    assert venues.count("coingecko") == 3 and caplog.records  # the failures were logged...
    assert KEY not in caplog.text  # ...without the key
    source = feed.sources[0]
    assert KEY not in repr(source) and KEY not in repr(feed) and KEY not in repr(vars(source))
    assert "api_key=set" in repr(source)


async def test_pro_base_url_uses_the_pro_header():
    venues = Venues(ok(cg_text({"weth": "1"})))
    source = CoinGecko(venues.client, base_url="https://pro-api.coingecko.com/api/v3", api_key=KEY)
    assert await source.fetch(["weth"]) == {"weth": Quote("1", UPDATED * 1000)}
    assert venues.requests[0].headers["x-cg-pro-api-key"] == KEY
    assert "x-cg-demo-api-key" not in venues.requests[0].headers


async def test_no_key_no_header():
    venues = Venues(ok(cg_text({"weth": "1"})))
    await CoinGecko(venues.client).fetch(["weth"])
    assert not any(h.startswith("x-cg-") for h in venues.requests[0].headers)


def test_load_api_key(monkeypatch, tmp_path):
    monkeypatch.setenv("COINGECKO_API_KEY", " env-key \n")
    assert load_api_key() == "env-key"
    path = tmp_path / "cg.key"
    path.write_text("file-key\n")
    assert load_api_key(path) == "file-key"
    monkeypatch.delenv("COINGECKO_API_KEY")
    assert load_api_key() is None


# --- DefiLlama, config, loop ------------------------------------------------------------------------------------

async def test_defillama_source_parses_its_shape():
    body = ('{"coins": {"coingecko:weth": {"price": 3001.2, "symbol": "WETH", "timestamp": 1700000000,'
            ' "confidence": 0.99}, "coingecko:dai": {"price": 9.9e-1, "symbol": "DAI", "timestamp": 1700000001}}}')
    venues = Venues(_down, ok(body))
    quotes = await DefiLlama(venues.client).fetch(["weth", "dai", "aave"])
    assert quotes == {"weth": Quote("3001.2", 1_700_000_000_000), "dai": Quote("0.99", 1_700_000_001_000)}


def test_config_bounds():
    with pytest.raises(ValueError):
        FeedConfig(ttl_s=20)
    with pytest.raises(ValueError):
        FeedConfig(ttl_s=61)
    assert FeedConfig(ttl_s=5, min_ttl_s=1).ttl_s == 5  # the bounds are configurable
    with pytest.raises(ValueError):
        FeedConfig(tokens=(Token("A", "x"), Token("B", "x")))
    with pytest.raises(ValueError):
        Token("weth", "weth")


async def test_run_sends_each_poll_and_stops():
    venues = Venues(ok(cg_text(ALL_CG)))
    feed = feed_for(venues, Clock())
    stop = asyncio.Event()
    sent: list[list] = []

    async def send(frames):
        sent.append(frames)
        if len(sent) == 3:
            stop.set()

    await asyncio.wait_for(feed.run(send, 0.001, stop), timeout=5)
    assert len(sent) == 3 and len(venues.requests) == 1  # the clock stands still: later polls hit the cache
    assert sent[0] == sent[2] and all(f.status == "live" for f in sent[2])
