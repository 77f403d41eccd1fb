"""Live Bybit market data: the universe to watch, and recording it to a tape."""
from __future__ import annotations

import asyncio
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import httpx

from papertape.config import Settings
from papertape.core.instruments import Instrument
from streams.bybit.instruments import INSTRUMENT_LIST, cache_path, load_or_discover, public_http
from streams.bybit.tape import TapeWriter, header_of
from streams.bybit.ws import BybitPublicFeed
from streams.sources.coingecko import (
    COINGECKO_BASE,
    DEFILLAMA_BASE,
    CoinGecko,
    DefiLlama,
    FeedConfig,
    PriceFeed,
    Source,
    Token,
    load_api_key,
)


def stop_on_signals(stop: asyncio.Event) -> asyncio.Event:
    """`stop` set by SIGINT or SIGTERM (when this loop may take signals: not in a thread)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError):
            pass
    return stop


def universe(settings: Settings) -> list[Instrument]:
    """The instruments to watch: Bybit's catalog (cached in the data directory) through the settings' filters.
    Raises InstrumentsUnavailable when neither Bybit nor the cache can say."""
    b = settings.bybit
    return load_or_discover(lambda: public_http(b.rest_url), cache_path(settings.data_dir, b.category, b.settle_coin),
                            b.instruments_max_age_s, category=b.category, settle_coin=b.settle_coin,
                            statuses=b.statuses, min_turnover_24h=b.min_turnover_24h,
                            include=b.symbols or None, exclude=b.exclude)


def token_instruments(settings: Settings) -> list[Instrument]:
    """DEX tokens priced in USD by an aggregator: no exchange rules, so 1e-8 steps (the venue of issue 5 adds
    gas and pool depth)."""
    step = Decimal("0.00000001")
    return [Instrument(symbol, step, step, step, Decimal(0), settle_coin="USD", max_leverage=Decimal(1),
                       category="dex", funding_interval_min=0) for symbol in settings.coingecko.tokens]


async def token_prices(settings: Settings, push, stop: asyncio.Event) -> None:
    """CoinGecko (then the fallback) prices of the settings' tokens, as frames passed to `push`, until `stop`."""
    cg = settings.coingecko
    config = FeedConfig(tokens=tuple(Token(s, i) for s, i in cg.tokens.items()), ttl_s=cg.ttl_s,
                        max_age_s=cg.max_age_s)
    async with httpx.AsyncClient() as client:
        sources: list[Source] = [CoinGecko(client, base_url=cg.base_url or COINGECKO_BASE, api_key=load_api_key()),
                                 DefiLlama(client, base_url=cg.fallback_url or DEFILLAMA_BASE)]
        await PriceFeed(sources, config).run(push, cg.every_s, stop)


def deep_symbols(settings: Settings, symbols: list[str]) -> list[str]:
    """Symbols a session names (not '*'): they get the deeper order book."""
    named = {sym for cfg in settings.sessions for sym in cfg.symbols if sym != "*"}
    return sorted(named & set(symbols))


def feed_for(settings: Settings, symbols: list[str], on_frames, **kw) -> BybitPublicFeed:
    b = settings.bybit
    return BybitPublicFeed(symbols, on_frames, deep=deep_symbols(settings, symbols), depth=b.deep_depth,
                           category=b.category, url=b.ws_url, stale_after_s=b.stale_after_s,
                           lateness_ms=b.lateness_ms, max_symbols_per_connection=b.max_symbols_per_connection,
                           **kw)


def tape_header(settings: Settings, instruments: list[Instrument]) -> dict:
    b = settings.bybit
    return {"v": 1, "source": "bybit", "category": b.category, "started_ns": time.time_ns(),
            "lateness_ms": b.lateness_ms, "stale_after_ms": int(b.stale_after_s * 1000),
            "instruments": INSTRUMENT_LIST.dump_python(instruments, mode="json")}


def with_tape_instruments(settings: Settings) -> Settings:
    """Settings whose instruments include those recorded in the headers of the tapes it replays."""
    known = settings.instrument_map()
    for path in settings.replay:
        try:
            header = header_of(Path(path))
        except (OSError, ValueError, EOFError):  # not a tape (gzip.BadGzipFile is an OSError)
            continue
        for inst in INSTRUMENT_LIST.validate_python(header.get("instruments") or []):
            known.setdefault(inst.symbol, inst)
    return settings.model_copy(update={"instruments": list(known.values())})


async def record(settings: Settings, path: Path, seconds: float | None, max_mb: float | None, out: TextIO,
                 progress_every_s: float = 5.0, stop: asyncio.Event | None = None) -> dict:
    """Record what the feed receives to a tape until `seconds`, `max_mb`, `stop` or SIGINT/SIGTERM."""
    instruments = universe(settings)
    symbols = [i.symbol for i in instruments]
    if not symbols:
        raise ValueError("no instrument passes the filters: nothing to record")
    writer = TapeWriter(path, tape_header(settings, instruments),
                        None if max_mb is None else int(max_mb * 1_000_000), seconds)
    stop = stop_on_signals(stop or asyncio.Event())
    frames = 0

    async def count(batch) -> None:
        nonlocal frames
        frames += len(batch)

    feed = feed_for(settings, symbols, count, on_raw=writer.write,
                    on_alert=lambda sev, title, text: print(f"  [{sev}] {title}: {text}", file=out, flush=True))
    print(f"recording {len(symbols)} {settings.bybit.category} symbols on {len(feed.connections)} connection(s) "
          f"to {path}", file=out, flush=True)
    task = asyncio.create_task(feed.run(stop))
    started = time.monotonic()
    next_report = started + progress_every_s
    try:
        while not stop.is_set():
            await asyncio.sleep(0.2)
            if writer.full:
                stop.set()
            if time.monotonic() >= next_report:
                next_report += progress_every_s
                _progress(out, writer, feed, frames, started)
        stats = await task
    finally:
        writer.close()
    _progress(out, writer, feed, frames, started)
    return {"messages": writer.messages, "bytes": writer.size, "frames": frames, "symbols": len(symbols),
            "connections": len(feed.connections), "gaps": stats.gaps, "stale": stats.stale,
            "replaced": stats.replaced}


def _progress(out: TextIO, writer: TapeWriter, feed: BybitPublicFeed, frames: int, started: float) -> None:
    s = feed.stats
    print(f"  {time.monotonic() - started:6.0f} s  {writer.messages:>9} messages  {writer.size / 1e6:8.2f} MB  "
          f"{frames:>9} frames  stale {len(feed.watch.stale):>4}  gaps {s.gaps}  reconnects {s.replaced}",
          file=out, flush=True)
