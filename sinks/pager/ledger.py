"""The pager's durable memory: a Kafka topic of what each target has been given.

One record per target and incident dedup key (key ``<target>|<dedup_key>``, value the
:class:`~sinks.pager.memory.KeyState` as JSON), written after a delivery and before the incidents
topic's offset is committed past it. On start the pager reads the topic from the beginning: the
last record of each key is its state. The topic is created with ``cleanup.policy=compact`` so
Kafka keeps only that last record; correctness does not depend on compaction (Tansu, the embedded
broker, never compacts), only disk use does.

:class:`MemoryLedger` is the same store in a list, for tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional, Protocol

from sinks.pager.memory import KeyState, decode, encode

log = logging.getLogger("semwatch.pager")

Entry = tuple[str, str, KeyState]  # target, dedup_key, state


class Ledger(Protocol):
    async def load(self) -> list[Entry]: ...

    async def save(self, target: str, dedup_key: str, state: KeyState) -> None: ...


class MemoryLedger:
    """A ledger in a list: survives a :class:`~sinks.pager.dispatch.Pager`, not the process."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    async def load(self) -> list[Entry]:
        return [decode(value) for _key, value in self.records]

    async def save(self, target: str, dedup_key: str, state: KeyState) -> None:
        self.records.append(encode(target, dedup_key, state))


class KafkaLedger:
    """The ledger on a Kafka topic (``SEMWATCH_TOPICS__PAGER_DELIVERED``)."""

    def __init__(self, topic: str, kafka_kwargs: dict[str, Any], *, retry_max_s: float = 30.0,
                 load_timeout_s: float = 120.0):
        self.topic = topic
        self.kafka_kwargs = kafka_kwargs
        self.retry_max_s = retry_max_s
        self.load_timeout_s = load_timeout_s
        self._producer = None

    async def start(self) -> None:
        """Create the topic if it is missing (one partition, compacted), then the producer."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(client_id="semwatch-pager-admin", **self.kafka_kwargs)
        await admin.start()
        try:
            if self.topic not in await admin.list_topics():
                response = await admin.create_topics(
                    [NewTopic(self.topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
                for _name, code, message in getattr(response, "topic_errors", []):
                    if code not in (0, 36):  # 36: created meanwhile by another pager
                        raise RuntimeError(f"cannot create the pager's ledger topic {self.topic} "
                                           f"(error {code}: {message}); create it with "
                                           "cleanup.policy=compact, or allow the pager to")
                log.info("created the ledger topic %s (cleanup.policy=compact)", self.topic)
        finally:
            await admin.close()
        self._producer = AIOKafkaProducer(client_id="semwatch-pager-ledger", acks="all", **self.kafka_kwargs)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def load(self) -> list[Entry]:
        """Every record from the beginning to the last one as of now, in order.

        Read past the end that ListOffsets reports, until two polls in a row bring nothing: the
        embedded broker (Tansu) reports it as the last batch's first offset + 1, and the last
        batch often holds two targets' records of one incident. Stopping there forgot that a
        resolve was delivered, and a restarted pager re-sent the alert and the resolve.
        """
        from aiokafka import AIOKafkaConsumer, TopicPartition

        reader = AIOKafkaConsumer(group_id=None, client_id="semwatch-pager-ledger-load",
                                  enable_auto_commit=False, **self.kafka_kwargs)
        await reader.start()
        entries: list[Entry] = []
        try:
            await reader.topics()  # refresh metadata
            parts = [TopicPartition(self.topic, p) for p in sorted(reader.partitions_for_topic(self.topic) or ())]
            if not parts:
                return entries
            reader.assign(parts)
            ends = await reader.end_offsets(parts)
            await reader.seek_to_beginning(*parts)
            todo = {tp: end for tp, end in ends.items() if end > 0}
            if not todo:
                return entries
            deadline = time.monotonic() + self.load_timeout_s
            quiet = 0  # polls in a row that brought nothing, once past the reported ends
            while todo or quiet < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"reading the ledger topic {self.topic} took over "
                                       f"{self.load_timeout_s:.0f}s; not starting with half a memory")
                got = await reader.getmany(timeout_ms=500 if todo else 200, max_records=5000)
                quiet = 0 if got else quiet + 1
                for tp, records in got.items():
                    for rec in records:
                        if rec.value is None:
                            continue
                        try:
                            entries.append(decode(rec.value))
                        except ValueError as exc:
                            log.warning("ledger %s[%d]@%d skipped: %s", tp.topic, tp.partition, rec.offset, exc)
                for tp in list(todo):
                    if await reader.position(tp) >= todo[tp]:
                        del todo[tp]
                        quiet = 0
        finally:
            await reader.stop()
        return entries

    async def save(self, target: str, dedup_key: str, state: KeyState) -> None:
        """Write until the broker has it: the offset commit that follows depends on it."""
        from aiokafka.errors import KafkaError

        key, value = encode(target, dedup_key, state)
        delay: Optional[float] = None
        while True:
            try:
                await self._producer.send_and_wait(self.topic, value=value, key=key)
                return
            except KafkaError as exc:
                delay = min(self.retry_max_s, (delay or 0.25) * 2)
                log.warning("writing the ledger failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
