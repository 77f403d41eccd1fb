"""Which Bybit public topics to subscribe, on how many connections, in which requests.

Bybit's limits: at most 10 args per subscribe request, and under 21,000 characters of args per connection.
Every symbol gets `tickers`, `publicTrade` and `orderbook.1`; symbols a session trades also get a deeper
book. A symbol's topics stay on one connection, so a dropped connection takes whole symbols with it and its
books resnapshot together.
"""
from __future__ import annotations

import json
from typing import Iterable, NamedTuple

MAX_ARGS_PER_REQUEST = 10
MAX_ARGS_CHARS = 21_000  # per connection, Bybit's limit
CHARS_HEADROOM = 1_000  # stay this far under it
BASE_TOPICS = ("tickers.{symbol}", "publicTrade.{symbol}", "orderbook.1.{symbol}")
DEEP_DEPTHS = (50, 200, 500)


class Request(NamedTuple):
    """One subscribe request: a topic template and the symbols it is applied to (pybit's subscribe())."""

    template: str
    symbols: tuple[str, ...]

    @property
    def args(self) -> list[str]:
        return [self.template.format(symbol=s) for s in self.symbols]


class Connection(NamedTuple):
    symbols: tuple[str, ...]
    requests: tuple[Request, ...]

    @property
    def args(self) -> list[str]:
        return [a for r in self.requests for a in r.args]


def args_chars(args: Iterable[str]) -> int:
    """What the args of a connection weigh: their JSON list, as sent."""
    return len(json.dumps(list(args), separators=(",", ":")))


def topics_of(symbol: str, deep: bool, depth: int) -> list[str]:
    templates = list(BASE_TOPICS) + ([f"orderbook.{depth}.{{symbol}}"] if deep else [])
    return [t.format(symbol=symbol) for t in templates]


def plan(symbols: Iterable[str], deep: Iterable[str] = (), depth: int = 50, max_symbols: int = 100,
         max_chars: int = MAX_ARGS_CHARS - CHARS_HEADROOM) -> list[Connection]:
    """Connections covering every symbol (sorted, deduplicated), each under `max_chars` of args and at most
    `max_symbols` symbols, with requests of at most 10 args."""
    if depth not in DEEP_DEPTHS:
        raise ValueError(f"deep book depth must be one of {DEEP_DEPTHS}, not {depth}")
    deep_set = set(deep)
    connections: list[Connection] = []
    group: list[str] = []
    chars = 2  # "[]"
    for symbol in sorted(set(symbols)):
        topics = topics_of(symbol, symbol in deep_set, depth)
        weight = sum(len(t) + 3 for t in topics)  # quotes and a comma each
        if weight + 2 > max_chars:
            raise ValueError(f"{symbol}: its topics alone exceed {max_chars} characters")
        if group and (len(group) >= max_symbols or chars + weight > max_chars):
            connections.append(_connection(group, deep_set, depth))
            group, chars = [], 2
        group.append(symbol)
        chars += weight
    if group:
        connections.append(_connection(group, deep_set, depth))
    return connections


def _connection(symbols: list[str], deep: set[str], depth: int) -> Connection:
    requests = []
    for template in BASE_TOPICS:
        requests += _chunks(template, symbols)
    requests += _chunks(f"orderbook.{depth}.{{symbol}}", [s for s in symbols if s in deep])
    return Connection(tuple(symbols), tuple(requests))


def _chunks(template: str, symbols: list[str]) -> list[Request]:
    return [Request(template, tuple(symbols[i:i + MAX_ARGS_PER_REQUEST]))
            for i in range(0, len(symbols), MAX_ARGS_PER_REQUEST)]
