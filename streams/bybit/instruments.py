"""Bybit instrument discovery: /v5/market/instruments-info (paginated) -> `Instrument`s, universe filters, cache.

Public market data needs no keys and is always read from Bybit mainnet unless an endpoint is given (tests point
it at a local server). `discover` fetches and filters; `load_or_discover` keeps the unfiltered catalog in a JSON
file, so changing the filters needs no refetch, and falls back to a stale file when Bybit cannot be reached.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

import requests
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP
from pydantic import TypeAdapter, ValidationError

from papertape.core.instruments import Instrument

log = logging.getLogger(__name__)

CATEGORIES = ("linear", "spot")
PAGE_LIMIT = 1000  # Bybit's maximum page size for instruments-info
MAX_PAGES = 100  # 100k instruments: far above any real universe, stops a server that never ends
CACHE_VERSION = 1
INSTRUMENT_LIST = TypeAdapter(list[Instrument])  # instruments to and from JSON


class BybitError(RuntimeError):
    """Bybit answered, but not with what we asked for (retCode != 0, malformed body, cursor loop)."""


class BybitUnavailable(BybitError):
    """Bybit could not be reached (network error, HTTP status other than 200)."""


class InstrumentsUnavailable(RuntimeError):
    """Neither a discovery nor a cache file could provide the instruments."""


class PublicHTTP(Protocol):
    def get_instruments_info(self, **kwargs: Any) -> dict: ...

    def get_tickers(self, **kwargs: Any) -> dict: ...


def public_http(endpoint: str | None = None, timeout: float = 10) -> PublicHTTP:
    """A keyless pybit session on Bybit mainnet, or on `endpoint` (e.g. "http://127.0.0.1:8080") when given."""
    session = HTTP(testnet=False, demo=False, timeout=timeout, max_retries=3, retry_delay=1)
    if endpoint is not None:
        session.endpoint = endpoint.rstrip("/")  # pybit builds every URL as endpoint + "/v5/..."
    return session


# ---------------------------------------------------------------- fetching


def _call(fn: Callable[..., dict], **query: Any) -> dict:
    """One pybit request; its exceptions and Bybit's error answers become ours, with the request named."""
    what = f"{fn.__name__}({', '.join(f'{k}={v}' for k, v in query.items() if v is not None)})"
    try:
        body = fn(**query)
    except InvalidRequestError as e:
        raise BybitError(f"Bybit refused {what}: retCode={e.status_code} {e.message}") from e
    except (FailedRequestError, requests.RequestException) as e:
        raise BybitUnavailable(f"Bybit unreachable for {what}: {e}") from e
    if not isinstance(body, dict) or body.get("retCode") != 0:
        code, msg = (body.get("retCode"), body.get("retMsg")) if isinstance(body, dict) else (None, body)
        raise BybitError(f"Bybit refused {what}: retCode={code} {msg}")
    result = body.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("list"), list):
        raise BybitError(f"Bybit answered {what} without result.list")
    return result


def fetch_instrument_pages(http: PublicHTTP, category: str) -> Iterator[dict]:
    """Every raw instrument of `category`, following nextPageCursor until it is empty."""
    cursor, seen = None, set()
    for _ in range(MAX_PAGES):
        result = _call(http.get_instruments_info, category=category, limit=PAGE_LIMIT, cursor=cursor)
        yield from result["list"]
        cursor = result.get("nextPageCursor") or None
        if cursor is None:
            return
        if cursor in seen:
            raise BybitError(f"instruments-info cursor loop: {cursor!r} came back twice")
        seen.add(cursor)
    raise BybitError(f"instruments-info still paginating after {MAX_PAGES} pages")


def fetch_turnover(http: PublicHTTP, category: str) -> dict[str, Decimal]:
    """24 h turnover (quote coin) by symbol from /v5/market/tickers; unparsable values are left out."""
    out = {}
    for t in _call(http.get_tickers, category=category)["list"]:
        try:
            out[t["symbol"]] = _non_negative(t, "turnover24h")
        except (KeyError, TypeError, ValueError):
            continue
    return out


# ---------------------------------------------------------------- parsing


def _dec(raw: dict, *path: str) -> Decimal:
    """A finite Decimal at raw[path...], parsed from Bybit's string exactly; ValueError names the field."""
    name = ".".join(path)
    value: Any = raw
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"missing {name}")
        value = value[key]
    try:
        d = Decimal(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite():
        raise ValueError(f"invalid {name}={value!r}")
    return d


def _positive(raw: dict, *path: str) -> Decimal:
    d = _dec(raw, *path)
    if d <= 0:
        raise ValueError(f"invalid {'.'.join(path)}={d} (must be > 0)")
    return d


def _non_negative(raw: dict, *path: str) -> Decimal:
    d = _dec(raw, *path)
    if d < 0:
        raise ValueError(f"invalid {'.'.join(path)}={d} (must be >= 0)")
    return d


def _optional_positive(raw: dict, *path: str) -> Decimal | None:
    try:
        return _positive(raw, *path)
    except ValueError as e:
        if str(e).startswith("missing"):
            return None
        raise


def _text(raw: dict, key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"missing {key}")
    return value


def _funding_minutes(raw: dict) -> int:
    value = raw.get("fundingInterval")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"missing or invalid fundingInterval={value!r}")
    return value


def parse_linear(raw: dict) -> Instrument:
    """A linear perpetual from its instruments-info entry; ValueError when a field is missing or invalid."""
    leverage = _positive(raw, "leverageFilter", "maxLeverage")
    if leverage < 1:
        raise ValueError(f"invalid leverageFilter.maxLeverage={leverage}")
    return Instrument(
        symbol=_text(raw, "symbol"),
        tick_size=_positive(raw, "priceFilter", "tickSize"),
        lot_step=_positive(raw, "lotSizeFilter", "qtyStep"),
        min_qty=_positive(raw, "lotSizeFilter", "minOrderQty"),
        min_notional=_non_negative(raw, "lotSizeFilter", "minNotionalValue"),
        settle_coin=_text(raw, "settleCoin"),
        max_leverage=leverage,
        category="linear",
        funding_interval_min=_funding_minutes(raw),
        max_qty=_optional_positive(raw, "lotSizeFilter", "maxOrderQty"),
        base_coin=_text(raw, "baseCoin"),
        quote_coin=_text(raw, "quoteCoin"),
        status=_text(raw, "status"),
    )


def parse_spot(raw: dict) -> Instrument:
    """A spot pair: lot step is basePrecision, min notional minOrderAmt, no leverage, no funding."""
    quote = _text(raw, "quoteCoin")
    return Instrument(
        symbol=_text(raw, "symbol"),
        tick_size=_positive(raw, "priceFilter", "tickSize"),
        lot_step=_positive(raw, "lotSizeFilter", "basePrecision"),
        min_qty=_positive(raw, "lotSizeFilter", "minOrderQty"),
        min_notional=_non_negative(raw, "lotSizeFilter", "minOrderAmt"),
        settle_coin=quote,
        max_leverage=Decimal(1),
        category="spot",
        funding_interval_min=0,
        max_qty=_optional_positive(raw, "lotSizeFilter", "maxOrderQty"),
        base_coin=_text(raw, "baseCoin"),
        quote_coin=quote,
        status=_text(raw, "status"),
    )


def _wanted(raw: dict, category: str, settle_coin: str) -> bool:
    """Linear: perpetuals settled in `settle_coin`; spot: pairs quoted in it."""
    if category == "linear":
        return raw.get("contractType") == "LinearPerpetual" and raw.get("settleCoin") == settle_coin
    return raw.get("quoteCoin") == settle_coin


@dataclass
class Catalog:
    """Every wanted instrument of one category and settle coin, in any status, as Bybit listed them."""

    category: str
    settle_coin: str
    instruments: list[Instrument]
    skipped: dict[str, str] = field(default_factory=dict)  # symbol -> why it could not be parsed
    ignored: int = 0  # other contract types or settle coins
    turnover_24h: dict[str, Decimal] | None = None  # None: tickers not fetched
    fetched_at_ms: int = 0  # wall clock, for the user and the cache age only


def fetch_catalog(http: PublicHTTP, category: str = "linear", settle_coin: str = "USDT",
                  *, with_turnover: bool = False, clock: Callable[[], float] = time.time) -> Catalog:
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, not {category!r}")
    parse = parse_linear if category == "linear" else parse_spot
    cat = Catalog(category, settle_coin, [], fetched_at_ms=int(clock() * 1000))
    symbols: set[str] = set()
    for raw in fetch_instrument_pages(http, category):
        _add(cat, symbols, raw, parse)
    if with_turnover:
        cat.turnover_24h = fetch_turnover(http, category)
    if cat.skipped:
        log.warning("bybit %s %s: skipped %d instruments: %s", category, settle_coin, len(cat.skipped),
                    "; ".join(f"{s}: {why}" for s, why in sorted(cat.skipped.items())))
    return cat


def _add(cat: Catalog, symbols: set[str], raw: Any, parse: Callable[[dict], Instrument]) -> None:
    if not isinstance(raw, dict) or not _wanted(raw, cat.category, cat.settle_coin):
        cat.ignored += 1
        return
    symbol = str(raw.get("symbol") or f"#{len(cat.instruments) + len(cat.skipped)}")
    if symbol in symbols:
        cat.skipped[symbol] = "listed twice"
        return
    try:
        inst = parse(raw)
    except ValueError as e:
        cat.skipped[symbol] = str(e)
        return
    symbols.add(symbol)
    cat.instruments.append(inst)


# ---------------------------------------------------------------- universe


@dataclass(frozen=True)
class Universe:
    """Which instruments of a catalog to trade. `include` None: all; else only those symbols."""

    statuses: frozenset[str] = frozenset({"Trading"})
    min_turnover_24h: Decimal | None = None
    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()

    @classmethod
    def of(cls, statuses: Iterable[str] = ("Trading",), min_turnover_24h: Decimal | None = None,
           include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> Universe:
        return cls(frozenset(statuses), min_turnover_24h,
                   None if include is None else frozenset(s.upper() for s in include),
                   frozenset(s.upper() for s in exclude))

    def select(self, cat: Catalog) -> list[Instrument]:
        if self.min_turnover_24h is not None and cat.turnover_24h is None:
            raise ValueError("min_turnover_24h needs a catalog fetched with turnover")
        chosen = [i for i in cat.instruments if self._keeps(i, cat.turnover_24h)]
        self._warn_missing(cat)
        return sorted(chosen, key=lambda i: i.symbol)

    def _keeps(self, i: Instrument, turnover: dict[str, Decimal] | None) -> bool:
        if i.status not in self.statuses or i.symbol in self.exclude:
            return False
        if self.include is not None and i.symbol not in self.include:
            return False
        if self.min_turnover_24h is None:
            return True
        t = turnover.get(i.symbol) if turnover else None
        return t is not None and t >= self.min_turnover_24h

    def _warn_missing(self, cat: Catalog) -> None:
        if self.include is None:
            return
        missing = self.include - {i.symbol for i in cat.instruments}
        if missing:
            log.warning("bybit %s %s: included symbols not listed: %s", cat.category, cat.settle_coin,
                        ", ".join(sorted(missing)))


def discover(http: PublicHTTP, category: str = "linear", settle_coin: str = "USDT", *,
             statuses: Iterable[str] = ("Trading",), min_turnover_24h: Decimal | None = None,
             include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[Instrument]:
    """The filtered universe, sorted by symbol. Tickers are fetched only for the turnover filter."""
    universe = Universe.of(statuses, min_turnover_24h, include, exclude)
    cat = fetch_catalog(http, category, settle_coin, with_turnover=min_turnover_24h is not None)
    return universe.select(cat)


# ---------------------------------------------------------------- cache


def cache_path(data_dir: Path, category: str = "linear", settle_coin: str = "USDT") -> Path:
    return Path(data_dir) / f"instruments-{category}-{settle_coin}.json"


def write_cache(path: Path, cat: Catalog) -> None:
    """Atomically (temp file in the same directory, then rename) so a reader never sees half a file."""
    doc = {
        "version": CACHE_VERSION,
        "fetched_at_ms": cat.fetched_at_ms,
        "category": cat.category,
        "settle_coin": cat.settle_coin,
        "instruments": INSTRUMENT_LIST.dump_python(cat.instruments, mode="json"),
        "turnover_24h": None if cat.turnover_24h is None else {k: str(v) for k, v in cat.turnover_24h.items()},
        "skipped": cat.skipped,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cache(path: Path, category: str, settle_coin: str) -> Catalog | None:
    """The cached catalog, or None (logged) when the file is absent, unreadable or for another market."""
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("version") != CACHE_VERSION or (doc["category"], doc["settle_coin"]) != (category, settle_coin):
            log.warning("instrument cache %s is for another version or market; ignored", path)
            return None
        turnover = doc.get("turnover_24h")
        return Catalog(category, settle_coin, INSTRUMENT_LIST.validate_python(doc["instruments"]),
                       skipped=dict(doc.get("skipped") or {}),
                       turnover_24h=None if turnover is None else {k: Decimal(v) for k, v in turnover.items()},
                       fetched_at_ms=int(doc["fetched_at_ms"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidOperation, ValidationError) as e:
        log.warning("instrument cache %s unreadable (%s); ignored", path, e)
        return None


def load_or_discover(http_factory: Callable[[], PublicHTTP], path: Path, max_age_s: float = 86400, *,
                     category: str = "linear", settle_coin: str = "USDT",
                     statuses: Iterable[str] = ("Trading",), min_turnover_24h: Decimal | None = None,
                     include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                     clock: Callable[[], float] = time.time) -> list[Instrument]:
    """The filtered universe from a fresh cache, else from Bybit (refreshing the cache), else a stale cache.

    The cache keeps the whole catalog with turnover, so any filters apply to it. `http_factory` is called only
    when the cache is missing or older than `max_age_s`. Raises InstrumentsUnavailable when nothing works.
    """
    universe = Universe.of(statuses, min_turnover_24h, include, exclude)
    cached = read_cache(path, category, settle_coin)
    usable = cached is not None and (min_turnover_24h is None or cached.turnover_24h is not None)
    if cached is not None and usable and _fresh(cached, max_age_s, clock):
        return universe.select(cached)
    try:
        http = http_factory()
        cat = fetch_catalog(http, category, settle_coin, clock=clock)
        try:
            cat.turnover_24h = fetch_turnover(http, category)
        except BybitError as e:  # the turnover is a second endpoint: needed only by the turnover filter
            if min_turnover_24h is not None:
                raise BybitError(f"the 24 h turnover filter needs Bybit's tickers: {e}") from e
            log.warning("Bybit %s tickers unavailable (%s): the instruments are cached without 24 h turnover",
                        category, e)
    except BybitError as e:
        if cached is None or not usable:
            raise InstrumentsUnavailable(f"cannot discover Bybit {category} {settle_coin} instruments "
                                         f"and no usable cache at {path}: {e}") from e
        age_h = (clock() * 1000 - cached.fetched_at_ms) / 3_600_000
        log.warning("Bybit unreachable (%s); using stale instrument cache %s (%.1f h old)", e, path, age_h)
        return universe.select(cached)
    write_cache(path, cat)
    return universe.select(cat)


def _fresh(cat: Catalog, max_age_s: float, clock: Callable[[], float]) -> bool:
    age_ms = clock() * 1000 - cat.fetched_at_ms
    return 0 <= age_ms <= max_age_s * 1000  # a fetched_at in the future (clock moved back) counts as stale
