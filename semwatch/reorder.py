"""Event-time reordering across input partitions.

A keyed partition of the detect stage receives events from every partition of the runs topic, and
Faust drains those unevenly: while a backlog is read, one input partition can run many minutes of
event time ahead of another. Fed straight into the detectors, the slower partition's events would
all look late. The buffer holds events and releases them in event-time order once every *active*
source has moved past them (the watermark is the minimum over sources, as in Flink or Kafka
Streams); a source that has sent nothing for ``idle_s`` of wall-clock time stops holding the others
back, and ``max_buffered`` bounds memory.

>>> clock = iter([0.0] * 10).__next__
>>> buf = ReorderBuffer(idle_s=5, clock=clock)
>>> buf.add("p0", 10.0, "a"); buf.add("p1", 5.0, "b"); buf.add("p0", 12.0, "c")
>>> buf.release()  # p1 has only reached 5: nothing after that is safe yet
['b']
>>> buf.add("p1", 11.0, "d"); buf.release()
['a', 'd']
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from typing import Any, Callable


class ReorderBuffer:
    def __init__(self, idle_s: float = 2.0, max_buffered: int = 200_000,
                 clock: Callable[[], float] = time.monotonic):
        self.idle_s = idle_s
        self.max_buffered = max_buffered
        self._clock = clock
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._source_max: dict[str, float] = {}
        self._source_seen: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, source: str, ts: float, item: Any) -> None:
        heapq.heappush(self._heap, (ts, next(self._seq), item))
        if ts > self._source_max.get(source, -math.inf):
            self._source_max[source] = ts
        self._source_seen[source] = self._clock()

    def bound(self) -> float:
        """Event time up to which every active source has delivered."""
        now = self._clock()
        active = [m for s, m in self._source_max.items() if now - self._source_seen[s] < self.idle_s]
        return min(active) if active else math.inf

    def release(self) -> list[Any]:
        """Items safe to process, in event-time order (ties in arrival order)."""
        if not self._heap:
            return []
        bound = self.bound()
        heap, out = self._heap, []
        while heap and (heap[0][0] <= bound or len(heap) > self.max_buffered):
            out.append(heapq.heappop(heap)[2])
        return out

    def drain(self) -> list[Any]:
        out = [item for _, _, item in sorted(self._heap)]
        self._heap.clear()
        return out
