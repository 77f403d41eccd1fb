"""Token prices for the DEX paper venue: CoinGecko first, DefiLlama as fallback, polled over httpx.

A `PriceFeed` asks its sources in order for the tokens still unpriced: CoinGecko in one bulk `simple/price`
request, DefiLlama (`coins.llama.fi/prices/current`) for whatever CoinGecko did not give. Answers are cached for a
TTL; a failing source is backed off (Retry-After on 429, else exponential with jitter) and skipped meanwhile.

Prices stay exact: bodies are parsed with every JSON number kept as its text, then normalized through Decimal to
a plain `PriceStr`. A token with no valid price, or whose last price is older than `max_age_s`, gets an
"unavailable" frame: a price is never made up, and never reused once stale.

The API key lives only in request headers; it never reaches a URL, a log line, a repr or an exception.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

import httpx
from pydantic import TypeAdapter, ValidationError

from schemas import MarketFrame, Ticker
from schemas.base import PriceStr

log = logging.getLogger(__name__)

COINGECKO_BASE = "https://api.coingecko.com/api/v3"
COINGECKO_PRO_BASE = "https://pro-api.coingecko.com/api/v3"
DEFILLAMA_BASE = "https://coins.llama.fi"
API_KEY_ENV = "COINGECKO_API_KEY"

_SYMBOL = re.compile(r"^[A-Z0-9._-]{1,40}$")
_CG_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# A JSON number as text: rejects NaN, Infinity, "1_000" and other forms Decimal() would accept.
_NUMBER = re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$")
_PRICE = TypeAdapter(PriceStr)
_DECIMALS = 18  # the finest step PriceStr can hold
_CTX = Context(prec=60)  # enough for 20 integer + 18 fractional digits


# --- tokens and quotes ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    symbol: str  # the venue's symbol, e.g. "WETH"
    cg_id: str  # the CoinGecko coin id, e.g. "weth"

    def __post_init__(self) -> None:
        if not _SYMBOL.match(self.symbol):
            raise ValueError(f"bad token symbol {self.symbol!r}")
        if not _CG_ID.match(self.cg_id):
            raise ValueError(f"bad CoinGecko id {self.cg_id!r}")


DEFAULT_TOKENS: tuple[Token, ...] = (
    Token("WETH", "weth"), Token("USDC", "usd-coin"), Token("DAI", "dai"), Token("WBTC", "wrapped-bitcoin"),
    Token("UNI", "uniswap"), Token("AAVE", "aave"), Token("LINK", "chainlink"), Token("MATIC", "matic-network"),
    Token("ARB", "arbitrum"),
)


@dataclass(frozen=True)
class Quote:
    price: str  # a PriceStr
    ts_ms: int  # the source's time of the price


def exact_price(raw: Any) -> str | None:
    """The price text of a JSON number as a plain PriceStr, or None when it is no usable price (missing, not a
    number, zero, negative, NaN, out of range). More than 18 decimals are rounded half-even to 18."""
    if not isinstance(raw, str) or not _NUMBER.match(raw):
        return None
    d = Decimal(raw)
    # Check the magnitude before formatting: "1e999999999" must not become a billion-digit string.
    if d <= 0 or d.adjusted() >= 20 or d.adjusted() < -_DECIMALS:
        return None
    exponent = d.as_tuple().exponent  # an int: d is finite ('n', 'N', 'F' are NaN's and infinity's)
    if isinstance(exponent, int) and exponent < -_DECIMALS:
        d = d.quantize(Decimal(1).scaleb(-_DECIMALS), rounding=ROUND_HALF_EVEN, context=_CTX)
        text = format(d, "f").rstrip("0").rstrip(".")
    else:
        text = format(d, "f")
    try:
        return _PRICE.validate_python(text)
    except ValidationError:
        return None


def epoch_ms(raw: Any) -> int | None:
    """Seconds since the epoch (JSON number text) as milliseconds, or None when not a plausible time."""
    if not isinstance(raw, str) or not _NUMBER.match(raw):
        return None
    d = Decimal(raw)
    if not 0 < d < 10**11:
        return None
    return int(d * 1000)


def parse_exact(text: str) -> Any:
    """JSON with every number kept as its text (NaN/Infinity too), so no digit goes through a float."""
    return json.loads(text, parse_float=str, parse_int=str, parse_constant=str)


def simple_price_quotes(body: dict[str, Any], ids: Sequence[str]) -> dict[str, Quote]:
    """The usable quotes of a `simple/price` answer (parsed with parse_exact), by CoinGecko id."""
    quotes = {}
    for cg_id in ids:
        entry = body.get(cg_id)
        if isinstance(entry, dict):
            price, ts = exact_price(entry.get("usd")), epoch_ms(entry.get("last_updated_at"))
            if price is not None and ts is not None:
                quotes[cg_id] = Quote(price, ts)
    return quotes


def quote_frame(source: str, symbol: str, quote: Quote, recv_ns: int) -> MarketFrame:
    """A token's price as a market frame: its last (and mark) price at the source's time."""
    return MarketFrame(id=f"{source}:{symbol}:{quote.ts_ms}", ts=quote.ts_ms, venue=source, symbol=symbol,
                       recv_ts=recv_ns, ticker=Ticker(last=quote.price, mark=quote.price), status="live")


# --- sources ----------------------------------------------------------------------------------------------------

class SourceError(Exception):
    """A source gave no usable answer: transport failure, bad status or malformed body."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Source(Protocol):
    name: str

    async def fetch(self, ids: Sequence[str]) -> dict[str, Quote]: ...


class _Secret:
    """Holds a key so that no repr, vars() dump or f-string can show it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def load_api_key(path: str | Path | None = None, env: str = API_KEY_ENV) -> str | None:
    """The CoinGecko API key from a file (when `path` is given) or else the environment; None when absent."""
    key = Path(path).read_text().strip() if path is not None else os.environ.get(env, "").strip()
    return key or None


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return max(0.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):  # absent, or an HTTP date: fall back to exponential backoff
        return None


async def _get_json(client: httpx.AsyncClient, url: str, *, params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None, timeout_s: float) -> Any:
    try:
        resp = await client.get(url, params=params, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        raise SourceError("timeout") from None
    except httpx.TransportError as e:
        raise SourceError(f"connection error ({type(e).__name__})") from None
    if resp.status_code == 429:
        raise SourceError("rate limited (429)", _retry_after(resp))
    if resp.status_code != 200:
        raise SourceError(f"HTTP {resp.status_code}")
    try:
        return parse_exact(resp.text)
    except ValueError:
        raise SourceError("malformed JSON body") from None


class CoinGecko:
    """`GET {base}/simple/price` for all ids at once, USD, with each coin's last update time."""

    name = "coingecko"

    def __init__(self, client: httpx.AsyncClient, *, base_url: str = COINGECKO_BASE, api_key: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._key = _Secret(api_key) if api_key else None

    @property
    def key_header(self) -> str:
        return "x-cg-pro-api-key" if "pro-api.coingecko.com" in self.base_url else "x-cg-demo-api-key"

    def __repr__(self) -> str:
        return f"CoinGecko(base_url={self.base_url!r}, api_key={'set' if self._key else 'none'})"

    async def fetch(self, ids: Sequence[str]) -> dict[str, Quote]:
        params = {"ids": ",".join(ids), "vs_currencies": "usd", "include_last_updated_at": "true",
                  "precision": "full"}
        headers = {self.key_header: self._key.value} if self._key else None
        body = await _get_json(self.client, f"{self.base_url}/simple/price", params=params, headers=headers,
                               timeout_s=self.timeout_s)
        if not isinstance(body, dict):
            raise SourceError("malformed body (not an object)")
        return simple_price_quotes(body, ids)


class DefiLlama:
    """`GET {base}/prices/current/coingecko:a,coingecko:b`: DefiLlama's price of CoinGecko ids."""

    name = "defillama"

    def __init__(self, client: httpx.AsyncClient, *, base_url: str = DEFILLAMA_BASE, timeout_s: float = 10.0) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"DefiLlama(base_url={self.base_url!r})"

    async def fetch(self, ids: Sequence[str]) -> dict[str, Quote]:
        coins = ",".join(f"coingecko:{i}" for i in ids)
        body = await _get_json(self.client, f"{self.base_url}/prices/current/{coins}", timeout_s=self.timeout_s)
        if not isinstance(body, dict) or not isinstance(body.get("coins"), dict):
            raise SourceError("malformed body (no 'coins' object)")
        quotes = {}
        for cg_id in ids:
            entry = body["coins"].get(f"coingecko:{cg_id}")
            if isinstance(entry, dict):
                price, ts = exact_price(entry.get("price")), epoch_ms(entry.get("timestamp"))
                if price is not None and ts is not None:
                    quotes[cg_id] = Quote(price, ts)
        return quotes


def default_sources(client: httpx.AsyncClient, *, api_key: str | None = None, base_url: str = COINGECKO_BASE,
                    timeout_s: float = 10.0) -> list[Source]:
    return [CoinGecko(client, base_url=base_url, api_key=api_key, timeout_s=timeout_s),
            DefiLlama(client, timeout_s=timeout_s)]


# --- the feed ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeedConfig:
    tokens: tuple[Token, ...] = DEFAULT_TOKENS
    ttl_s: float = 45.0
    min_ttl_s: float = 30.0  # bounds a configured ttl_s must respect (the free API tier's budget)
    max_ttl_s: float = 60.0
    max_age_s: float = 300.0  # a price older than this is not traded on
    backoff_max_s: float = 60.0
    jitter: float = 0.2  # an exponential delay grows by up to this fraction at random

    def __post_init__(self) -> None:
        if not self.min_ttl_s <= self.ttl_s <= self.max_ttl_s:
            raise ValueError(f"ttl_s {self.ttl_s} outside [{self.min_ttl_s}, {self.max_ttl_s}]")
        if self.max_age_s <= 0 or self.backoff_max_s <= 0 or self.jitter < 0:
            raise ValueError("max_age_s and backoff_max_s must be positive, jitter not negative")
        ids = [t.cg_id for t in self.tokens]
        symbols = [t.symbol for t in self.tokens]
        if len(set(ids)) != len(ids) or len(set(symbols)) != len(symbols):
            raise ValueError("token symbols and CoinGecko ids must be unique")


@dataclass
class Backoff:
    """When a source may be asked again."""

    max_s: float
    jitter: float
    failures: int = 0
    until: float = 0.0

    def fail(self, now: float, retry_after: float | None, rand: Callable[[], float]) -> float:
        self.failures += 1
        if retry_after is not None:
            delay = retry_after
        else:
            # Jitter spreads the retries of many feeds hitting the same rate limit.
            delay = min(self.max_s, 2 ** (self.failures - 1) * (1 + self.jitter * rand()))
        self.until = now + delay
        return delay

    def ok(self) -> None:
        self.failures, self.until = 0, 0.0


@dataclass(frozen=True)
class _Held:
    quote: Quote
    source: str
    recv_ns: int


Send = Callable[[list[MarketFrame]], Awaitable[None] | None]


class PriceFeed:
    """The current price of each token, from the first source that has it. See the module docstring."""

    def __init__(self, sources: Sequence[Source], config: FeedConfig | None = None, *,
                 clock: Callable[[], float] = time.time, rand: Callable[[], float] = random.random) -> None:
        if not sources:
            raise ValueError("a PriceFeed needs at least one source")
        self.sources = list(sources)
        self.config = config or FeedConfig()
        self.clock = clock  # wall-clock seconds: compared with the sources' timestamps
        self.rand = rand
        self.backoff = {s.name: Backoff(self.config.backoff_max_s, self.config.jitter) for s in self.sources}
        self._held: dict[str, _Held] = {}
        self._next_round = float("-inf")
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PriceFeed(sources={self.sources!r}, tokens={len(self.config.tokens)})"

    async def refresh(self) -> bool:
        """Ask the sources unless the last answer is still within the TTL. True when a round ran."""
        async with self._lock:
            now = self.clock()
            if now < self._next_round:
                return False
            missing = [t.cg_id for t in self.config.tokens]
            retry_at = now + self.config.ttl_s
            for source in self.sources:
                if not missing:
                    break
                backoff = self.backoff[source.name]
                if now < backoff.until:
                    log.debug("%s backed off for %.1f s more", source.name, backoff.until - now)
                    retry_at = min(retry_at, backoff.until)
                    continue
                try:
                    quotes = await source.fetch(missing)
                except Exception as e:  # noqa: BLE001 - any failure of a source means: try the next one
                    delay = backoff.fail(self.clock(), getattr(e, "retry_after", None), self.rand)
                    retry_at = min(retry_at, backoff.until)
                    log.warning("%s failed (%s); backing off %.1f s", source.name, _reason(e), delay)
                    continue
                backoff.ok()
                missing = self._take(source.name, quotes, missing)
            # Tokens still missing after a failure: try again as soon as a failed source may be asked.
            self._next_round = retry_at if missing else now + self.config.ttl_s
            if missing:
                log.warning("no fresh price for %s", ", ".join(missing))
            return True

    def _take(self, source: str, quotes: Mapping[str, Quote], missing: list[str]) -> list[str]:
        """Hold the fresh quotes among `missing`; returns the ids still missing."""
        recv_ns = int(self.clock() * 1e9)
        oldest_ms = self._now_ms() - int(self.config.max_age_s * 1000)
        still = []
        for cg_id in missing:
            q = quotes.get(cg_id)
            if q is None or q.ts_ms < oldest_ms:
                still.append(cg_id)
                continue
            held = self._held.get(cg_id)
            if held is None or q.ts_ms >= held.quote.ts_ms:  # never step back to an older price
                self._held[cg_id] = _Held(q, source, recv_ns)
        log.info("%s priced %d of %d tokens", source, len(missing) - len(still), len(missing))
        return still

    def frames(self, now_s: float | None = None) -> list[MarketFrame]:
        """One frame per token, in config order: live with its price, or unavailable (ts = `now_s`)."""
        now_ms = int((self.clock() if now_s is None else now_s) * 1000)
        oldest_ms = now_ms - int(self.config.max_age_s * 1000)
        out = []
        for token in self.config.tokens:
            held = self._held.get(token.cg_id)
            if held is not None and held.quote.ts_ms >= oldest_ms:
                out.append(self._live(token, held))
            else:
                out.append(self._unavailable(token, now_ms))
        return out

    async def poll(self) -> list[MarketFrame]:
        """Refresh when due, then the frames of now."""
        await self.refresh()
        return self.frames()

    async def run(self, send: Send, every_s: float, stop_event: asyncio.Event) -> None:
        """Poll every `every_s` seconds and `send` each poll's frames, until `stop_event` is set."""
        while not stop_event.is_set():
            try:
                frames = await self.poll()
                live = sum(f.status == "live" for f in frames)
                log.info("price poll: %d live, %d unavailable", live, len(frames) - live)
                result = send(frames)
                if inspect.isawaitable(result):
                    await result
            except Exception as e:  # noqa: BLE001 - the loop outlives one bad poll
                log.error("price poll failed (%s)", _reason(e))
            try:
                await asyncio.wait_for(stop_event.wait(), every_s)
            except asyncio.TimeoutError:
                pass

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _live(self, token: Token, held: _Held) -> MarketFrame:
        return quote_frame(held.source, token.symbol, held.quote, held.recv_ns)

    def _unavailable(self, token: Token, now_ms: int) -> MarketFrame:
        venue = self.sources[0].name
        # The suffix keeps the id apart from a live frame that happens to carry the same ms.
        return MarketFrame(id=f"{venue}:{token.symbol}:{now_ms}:unavailable", ts=now_ms, venue=venue,
                           symbol=token.symbol, recv_ts=now_ms * 1_000_000, status="unavailable")


def _reason(e: BaseException) -> str:
    # SourceError texts are ours and carry no secrets; other exceptions are named by type only.
    return str(e) if isinstance(e, SourceError) else type(e).__name__
