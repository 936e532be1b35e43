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
from typing import Any, Callable, Optional


class ReorderBuffer:
    def __init__(self, idle_s: float = 2.0, max_buffered: int = 200_000,
                 clock: Callable[[], float] = time.monotonic, stall_s: Optional[float] = None):
        self.idle_s = idle_s
        # A source in the middle of a batch (items added without progress, its watermark not yet
        # here) is not idle, only slow: under load the watermark can take longer than ``idle_s``
        # and releasing then would process the batch's earlier keys late. It stops holding the
        # others back only after ``stall_s`` (its producer died; a new owner re-sends the batch).
        self.stall_s = max(idle_s, stall_s if stall_s is not None else 30.0)
        self._mid_batch: set[str] = set()
        self.max_buffered = max_buffered
        self._clock = clock
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._source_max: dict[str, float] = {}
        self._source_seen: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, source: str, ts: float, item: Any, progress: bool = True) -> None:
        """Hold ``item``; with ``progress`` its event time also counts as the source's progress.

        A source whose items arrive out of event-time order (the keyed hop packs one batch's events
        by key, so a later key's earlier events can arrive after an earlier key's later ones) adds
        with ``progress=False`` and reports its progress with ``advance`` once the batch is out.

        >>> buf = ReorderBuffer(idle_s=5, clock=lambda: 0.0)
        >>> buf.add("p0", 12.0, "a", progress=False); buf.release()  # p0 has not said how far it got
        []
        >>> buf.add("p0", 11.0, "b", progress=False); buf.advance("p0", 12.0); buf.release()
        ['b', 'a']

        Mid-batch, a source is not idle after ``idle_s``, only after ``stall_s``:

        >>> now = [0.0]
        >>> buf = ReorderBuffer(idle_s=2, stall_s=30, clock=lambda: now[0])
        >>> buf.add("p0", 5.0, "a", progress=False); now[0] = 10.0; buf.release()
        []
        >>> now[0] = 31.0; buf.release()
        ['a']
        """
        heapq.heappush(self._heap, (ts, next(self._seq), item))
        if progress:
            if ts > self._source_max.get(source, -math.inf):
                self._source_max[source] = ts
            self._source_seen[source] = self._clock()
        else:
            if source not in self._source_max:
                # Known from now on: it holds the others back until its watermark arrives.
                self._source_max[source] = -math.inf
                self._source_seen[source] = self._clock()
            self._mid_batch.add(source)

    def advance(self, source: str, ts: float) -> None:
        """A watermark: ``source`` has delivered everything up to ``ts``, to any partition.

        Sent by the validate stage, so that a source with no recent event for *this* partition's
        keys does not hold the others back until it counts as idle.

        >>> buf = ReorderBuffer(idle_s=5, clock=lambda: 0.0)
        >>> buf.add("p0", 10.0, "a"); buf.add("p1", 4.0, "b"); buf.release()
        ['b']
        >>> buf.advance("p1", 11.0); buf.release()
        ['a']
        """
        if ts > self._source_max.get(source, -math.inf):
            self._source_max[source] = ts
        self._source_seen[source] = self._clock()
        self._mid_batch.discard(source)

    def bound(self) -> float:
        """Event time up to which every active source has delivered."""
        now = self._clock()
        mid, idle_s, stall_s = self._mid_batch, self.idle_s, self.stall_s
        active = [m for s, m in self._source_max.items()
                  if now - self._source_seen[s] < (stall_s if s in mid else idle_s)]
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
