"""Frames in receive order -> frames in event-time order, each held until the feed's event time has moved
`lateness_ms` past it.

Bybit's topics and connections interleave slightly out of event-time order, and everything downstream
(watermarks, the engines' merge) needs each partition in order. A frame that arrives after later frames were
already released is stamped with the release point, its content kept: dropping a book delta would corrupt the
book. `late` counts them.
"""
from __future__ import annotations

import heapq

import orjson

from streams.frames.wire import WireFrame


class EventOrder:
    def __init__(self, lateness_ms: int = 1_000) -> None:
        self.lateness_ms = lateness_ms
        self._heap: list[tuple[int, int, WireFrame]] = []
        self._n = 0
        self.max_ts = -1
        self.released_to = -1  # no frame at or below this event time will be released any more
        self.late = 0

    def push(self, frame: WireFrame) -> None:
        if frame.ts < self.released_to:
            self.late += 1
            frame = restamp(frame, self.released_to)
        self._n += 1
        heapq.heappush(self._heap, (frame.ts, self._n, frame))
        if frame.ts > self.max_ts:
            self.max_ts = frame.ts

    def release(self, upto: int | None = None) -> list[WireFrame]:
        """Frames up to event time `upto` (default: `lateness_ms` behind the newest frame), in order."""
        limit = self.max_ts - self.lateness_ms if upto is None else upto
        out = []
        heap = self._heap
        while heap and heap[0][0] <= limit:
            out.append(heapq.heappop(heap)[2])
        if limit > self.released_to:
            self.released_to = limit
        return out

    def drain(self) -> list[WireFrame]:
        return self.release(max(self.max_ts, self.released_to))

    def __len__(self) -> int:
        return len(self._heap)


def restamp(frame: WireFrame, ts: int) -> WireFrame:
    body = orjson.loads(frame.json)
    body["ts"] = ts
    return frame._replace(ts=ts, json=orjson.dumps(body))
