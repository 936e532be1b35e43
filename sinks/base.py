"""The one interface every incident output implements: ``add`` per incident, ``flush`` per checkpoint.

The worker adds each incident a batch produced to every sink, then flushes them all before it
writes the state that remembers those incidents (and before the input offsets may commit). A flush
that raises aborts that checkpoint: the batch's events are processed again after a restart and the
same incidents (same ``incident_id``) are emitted again, rather than a state saying "already
reported" for a report that never left the process.

>>> import asyncio
>>> sink = ListSink()
>>> sink.add("an incident")  # any Incident in practice
>>> asyncio.run(sink.flush()); sink.flushed
['an incident']
"""

from __future__ import annotations

from typing import Any


class IncidentSink:
    """Base of incident outputs. ``add`` must not block; ``flush`` delivers what was added."""

    def add(self, incident: Any) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        """Deliver everything added since the last flush (no-op for sinks that act in ``add``)."""


class ListSink(IncidentSink):
    """Keeps incidents in memory: for tests and for embedding the engine."""

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.flushed: list[Any] = []

    def add(self, incident: Any) -> None:
        self.pending.append(incident)

    async def flush(self) -> None:
        self.flushed.extend(self.pending)
        self.pending.clear()
