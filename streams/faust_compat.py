"""Every use of a Faust (or aiokafka) internal in semwatch, in one place, with the reason for it.

Faust's public API covers apps, topics, agents and tables. semwatch needs five things it does not
offer; each is done here, and :func:`check` verifies at start-up that the internals still exist, so
a Faust upgrade that moves one fails with a clear message instead of misbehaving at run time.

1. **Configurable consumer fetch wait.** Faust hard-codes ``fetch_max_wait_ms=1500`` when it builds
   the aiokafka consumer; Tansu waits out the full time on every fetch, so each batch took 1.5 s at
   low rates. :class:`App` swaps in a transport whose consumer thread sets
   ``AIOKafkaConsumer._fetch_max_wait_ms`` (read by ``AIOKafkaConsumer.start()``) from
   ``Settings.fetch_max_wait_s``. Internals: ``faust.App._new_transport``,
   ``aiokafka.Consumer._new_consumer_thread``, ``AIOKafkaConsumerThread._create_worker_consumer``.
2. **A hook before Faust waits for acks** (``faust.App._consumer_wait_empty``, called on stop and on
   every rebalance). Events held in the reorder buffer are acked only once processed; without the
   hook, a stop waits for acks that never come.
3. **Writing the state changelog directly.** ``Table.data`` (the in-memory store) is read and
   written by the engine, and changed entries go to ``Table.changelog_topic`` through
   ``App.producer.send`` in one batch instead of Faust's per-key ``Table.send_changelog``, whose
   bookkeeping cost more than the detectors. The records are exactly what Faust writes, so its
   recovery reads them back. The table's and changelog's serializers are set after creation
   (``Table.key_serializer``/``value_serializer``, ``changelog_topic.schema``): Faust derives them
   from key/value types only and overwrote the shared schema with JSON.
4. **Holding a message's ack until its events are processed**: ``Message.incref(n)`` for packed
   records that carry several events (each event's ``ack()`` then decrements it).
5. **Changelog recovery reads to the real end of each partition.** Faust recovers a table until the
   offset before the partition's end as ListOffsets reports it. The embedded broker (Tansu) reports
   the end as the *last batch's first offset* + 1, and a changelog write is one batch of many
   records: recovery stopped after the first record of the last batch and the rest of it was lost
   (a restarted worker forgot the last batch's run subjects, dedup ids and detector state; by
   Faust's code, records fetched past that point wait in its recovery buffer until the next
   recovery applies them, over newer state).
   ``_ConsumerThread._highwaters`` (what ``Recovery._build_highwaters`` asks) reads each partition
   on from the reported end - 1 with a group-less consumer until nothing more comes, and reports
   the offset after the last record read. With a broker that reports the end correctly this reads
   one record and changes nothing. Internals: ``AIOKafkaConsumerThread._highwaters``,
   ``AIOKafkaConsumerThread._create_client_consumer``.

Tested with faust-streaming 0.15.3, the latest release on PyPI on 2026-12-04.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Mapping, Optional

import faust
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger("semwatch.worker")


class FaustInternalsChanged(RuntimeError):
    """The installed Faust no longer has an internal semwatch relies on (see this module)."""


_REQUIRED = (
    (faust.App, "_new_transport"),
    (faust.App, "_consumer_wait_empty"),
    (faust_aiokafka.Consumer, "_new_consumer_thread"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_client_consumer"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_highwaters"),
    (faust_aiokafka.Transport, "Consumer"),
)


def check() -> None:
    """Fail fast, naming the internal, if this Faust lacks one of the internals used here."""
    from faust.types import Message

    missing = [f"{cls.__module__}.{cls.__qualname__}.{name}" for cls, name in _REQUIRED
               if not hasattr(cls, name)]
    if not hasattr(Message, "incref"):
        missing.append("faust.types.Message.incref")
    if missing:
        raise FaustInternalsChanged(
            "this faust-streaming release lacks internals semwatch uses (streams/faust_compat.py): "
            + ", ".join(missing) + "; install faust-streaming 0.15.x")


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms = 1500  # Faust's own value; set from Settings.fetch_max_wait_s

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions):
        ends = await super()._highwaters(partitions)
        if self.consumer.in_transaction or not any(ends.values()):
            return ends
        reader = self._create_client_consumer(self.transport)
        reader._fetch_max_wait_ms = min(self.fetch_max_wait_ms, 200)
        return await read_to_end(reader, ends)


async def read_to_end(reader, ends: Mapping, timeout_s: float = 30.0) -> dict:
    """The offset after each partition's last record, reading on from ``ends`` (what ListOffsets
    said) - 1 with ``reader`` (an unstarted group-less aiokafka consumer, stopped here) until two
    polls in a row bring nothing (see 5. in the module docstring)."""
    out = dict(ends)
    tps = {TopicPartition(tp.topic, tp.partition): tp for tp, end in ends.items() if end}
    loop = asyncio.get_running_loop()
    try:
        if not tps:
            return out
        await reader.start()
        reader.assign(list(tps))
        for tp, key in tps.items():
            reader.seek(tp, ends[key] - 1)
        deadline = loop.time() + timeout_s
        empty = 0
        while empty < 2 and loop.time() < deadline:
            got = await reader.getmany(timeout_ms=200)
            empty = 0 if got else empty + 1
            for tp, records in got.items():
                key = tps[TopicPartition(tp.topic, tp.partition)]
                out[key] = max(out[key], records[-1].offset + 1)
    finally:
        await reader.stop()  # also when never started: an unclosed consumer is logged as an error
    for key, end in out.items():
        if end != ends[key]:
            log.info("changelog %s/%d: the broker reports its end at %s, records run to %d; "
                     "recovering to %d", key.topic, key.partition, ends[key], end, end)
    return out


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        thread = _ConsumerThread(self, loop=self.loop, beacon=self.beacon)
        thread.fetch_max_wait_ms = self.app.semwatch_fetch_max_wait_ms
        return thread


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App with a configurable fetch wait (1) and a hook before Faust waits for acks (2)."""

    before_wait_empty: Optional[Callable[[], Awaitable[None]]] = None
    semwatch_fetch_max_wait_ms = 1500

    def _new_transport(self):
        transport = super()._new_transport()
        if type(transport) is faust_aiokafka.Transport:
            return _Transport(self.conf.broker_consumer, self)
        return transport

    async def _consumer_wait_empty(self, consumer, logger) -> None:
        if self.before_wait_empty is not None:
            await self.before_wait_empty()
        await super()._consumer_wait_empty(consumer, logger)
