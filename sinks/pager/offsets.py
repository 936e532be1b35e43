"""Which incidents-topic offsets may be committed: only past records every target is done with.

A record is taken up once for each target; it is done for a target once delivered, found a
duplicate, or refused for good. Per partition, the committable offset is the lowest offset not
yet done by every target (or, when all are done, the next one to read), so a pager that stops
re-reads exactly what some target still lacks.

>>> t = OffsetTracker()
>>> for offset in (5, 6, 7):
...     t.take("p0", offset, targets=2)
>>> t.done("p0", 6); t.done("p0", 6); t.done("p0", 5)
>>> t.committable()
{'p0': 5}
>>> t.done("p0", 5); t.committable()
{'p0': 7}
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class OffsetTracker:
    def __init__(self) -> None:
        self._pending: dict[Hashable, "OrderedDict[int, int]"] = {}  # partition -> offset -> targets left
        self._next: dict[Hashable, int] = {}  # partition -> offset after the last one taken up
        self._committed: dict[Hashable, int] = {}

    def take(self, partition: Hashable, offset: int, targets: int) -> None:
        if targets > 0:
            self._pending.setdefault(partition, OrderedDict())[offset] = targets
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def done(self, partition: Hashable, offset: int) -> None:
        pending = self._pending.get(partition)
        if pending is None or offset not in pending:
            return  # a partition given up on rebalance
        pending[offset] -= 1
        if pending[offset] <= 0:
            del pending[offset]

    def committable(self) -> dict[Hashable, int]:
        """Offsets to commit that move a partition forward since the last :meth:`committed`."""
        out = {}
        for partition, after in self._next.items():
            pending = self._pending.get(partition)
            offset = min(pending) if pending else after
            if offset > self._committed.get(partition, -1):
                out[partition] = offset
        return out

    def committed(self, offsets: dict[Hashable, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partition: Hashable) -> None:
        """A partition revoked: its records may still be delivered, but its offsets are not ours."""
        for table in (self._pending, self._next, self._committed):
            table.pop(partition, None)

    def pending(self) -> int:
        return sum(len(p) for p in self._pending.values())
