"""What every recording format gives a replay: frames as a source sends them, in event-time order."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, NamedTuple


class WireFrame(NamedTuple):
    """A frame as a source sends it: its JSON (what `MarketFrame.model_dump_json()` gives) and what routes it."""

    ts: int
    recv_ts: int
    symbol: str
    trades: int
    json: bytes
    live: bool = True  # the frame's status is "live" (not a stale or unavailable notice)


Bad = Callable[[int, Exception], None]  # (line number, why): a line skipped


class Format(NamedTuple):
    """A recording format: whether a file is one (its first non-empty line, its name), and its frames."""

    name: str
    looks_like: Callable[[bytes, str], bool]
    read: Callable[[list[bytes], str, Bad], Iterable[WireFrame]]  # a file's lines and name -> frames in time order


def sorted_lines(lines: list[bytes], sort_key: Callable[[bytes], tuple[int, int]],
                 build: Callable[[bytes], WireFrame], bad: Bad) -> Iterator[WireFrame]:
    """Frames of independent lines, sorted by (event time, receive time) keys read cheaply off each line.

    Keys are sorted and frames built lazily: the 170k frames of the bundled tape held at once take 0.8 GB and
    the garbage collector's rescans of them make loading 2.5x slower."""
    keyed = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                keyed.append((sort_key(line), number))
            except ValueError as exc:
                bad(number, exc)
    keyed.sort()
    for key, number in keyed:
        try:
            frame = build(lines[number - 1])
        except ValueError as exc:
            bad(number, exc)
            continue
        if (frame.ts, frame.recv_ts) != key:
            bad(number, ValueError(f"sort key {key} disagrees with the frame"))
            continue
        yield frame
