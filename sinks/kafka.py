"""Incident records on the Kafka sink topic: JSON value, key = dedup_key (docs/contracts.md)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from semwatch.contract import Incident
from sinks.base import IncidentSink


def incident_record(incident: Incident) -> bytes:
    """The record value for ``semwatch.incidents``; the key is ``incident.dedup_key``."""
    return incident.to_json().encode("utf-8")


class KafkaIncidentSink(IncidentSink):
    """Sends each incident to the incidents topic; ``flush`` returns once the broker acked them all.

    ``send(key=..., value=...)`` is a producer call that returns an awaitable of the delivery
    (Faust's ``Topic.send``): sends are started in ``flush`` in order and awaited together.
    """

    def __init__(self, send: Callable[..., Awaitable[Any]]):
        self._send = send
        self._pending: list[Incident] = []

    def add(self, incident: Incident) -> None:
        self._pending.append(incident)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        acks = [await self._send(key=inc.dedup_key.encode(), value=incident_record(inc)) for inc in pending]
        await asyncio.gather(*acks)
