"""CoinGecko tapes: `simple/price` answers as they were received, replayable like a Bybit tape. A live run that
records (`papertape run --live --tokens --record x.gz`) writes its CoinGecko answers to `x.coingecko.gz`.

A papertape tape (streams/bybit/tape.py's first line, `#papertape-tape {header}`) whose header says
`"source": "coingecko"` and maps the tokens to their CoinGecko ids (`"tokens": {"WETH": "weth"}`), with the
tokens' instruments; then one answer a line, `<receive time, ns> <the JSON body>`. Each token's price becomes a
frame at the source's `last_updated_at` (a price repeated by a later answer, as CoinGecko's cache repeats it, is
one frame), parsed exactly as the live feed parses it (streams/sources/coingecko.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from schemas import MarketFrame
from streams.bybit.tape import MAGIC
from streams.frames.wire import Bad, Format, WireFrame
from streams.sources.coingecko import parse_exact, quote_frame, simple_price_quotes

SOURCE = "coingecko"


def header(tokens: dict[str, str], instruments: list[dict[str, Any]]) -> dict[str, Any]:
    return {"v": 1, "source": SOURCE, "tokens": tokens, "instruments": instruments}


def companion(tape: Path) -> Path:
    """Where a live run recording `tape` writes its CoinGecko answers: `x.gz` -> `x.coingecko.gz`."""
    return tape.parent / f"{tape.name.removesuffix('.gz')}.coingecko.gz"


def answer(frames: Iterable[MarketFrame], ids: dict[str, str]) -> str | None:
    """The `simple/price` answer the live frames of CoinGecko's prices came from (its `usd` and
    `last_updated_at`, as it sent them); None when there is none (DefiLlama's prices, unavailable tokens)."""
    entries = [f'"{ids[f.symbol]}": {{"usd": {f.ticker.last}, "last_updated_at": {f.ts // 1000}}}'
               for f in frames if f.venue == SOURCE and f.status == "live" and f.ticker is not None
               and f.ticker.last is not None and f.symbol in ids and f.ts % 1000 == 0]
    return "{" + ", ".join(entries) + "}" if entries else None


def _is_coingecko_tape(first: bytes, name: str) -> bool:
    if not first.startswith(MAGIC):
        return False
    try:
        return orjson.loads(first[len(MAGIC):]).get("source") == SOURCE
    except orjson.JSONDecodeError:
        return False


def read(lines: list[bytes], name: str, bad: Bad) -> Iterator[WireFrame]:
    tokens: dict[str, str] = orjson.loads(lines[0][len(MAGIC):])["tokens"]
    ids = list(tokens.values())
    symbol_of = {cg_id: symbol for symbol, cg_id in tokens.items()}
    seen: set[tuple[str, int]] = set()
    frames = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            recv, body = line.split(b" ", 1)
            answer = parse_exact(body.decode())
            if not isinstance(answer, dict):
                raise ValueError("an answer is a JSON object")
            quotes = simple_price_quotes(answer, ids)
            recv_ns = int(recv)
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            bad(number, exc)
            continue
        for cg_id, quote in quotes.items():
            if (cg_id, quote.ts_ms) not in seen:
                seen.add((cg_id, quote.ts_ms))
                f = quote_frame(SOURCE, symbol_of[cg_id], quote, recv_ns)
                frames.append(WireFrame(f.ts, f.recv_ts, f.symbol, 0, f.model_dump_json().encode()))
    frames.sort(key=lambda w: (w.ts, w.recv_ts, w.symbol))
    yield from frames


COINGECKO_TAPE = Format("coingecko_tape", _is_coingecko_tape, read)
