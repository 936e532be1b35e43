"""The Faust app: runs topic -> validate -> keyed topic -> detect -> incidents topic (+ DLQ, /metrics).

Two agents:

``validate`` reads ``semwatch.runs`` (keyed by run_id), checks every record (size, UTF-8, JSON,
contract) and either dead-letters it (original bytes, ``semwatch.reason`` header, a counter per
reason) or forwards it to the internal keyed topic, keyed by the partition labels (``app`` by
default). That repartition puts every segment of one app in one partition, so its detector state
lives in exactly one worker. The events of one batch that share a key and an input partition travel
packed in one record (:mod:`streams.hop`): Faust's cost is per record.

``feedback`` counts the on-call's false-alarm marks (``semwatch.feedback``) per detector.

``detect`` reads the keyed topic in batches, runs one :class:`semwatch.engine.Engine` per partition
and sends incidents to ``semwatch.incidents`` keyed by ``dedup_key``. Engine state lives in a Faust
table (in memory, rebuilt from its changelog topic on start or on rebalance); after each batch only
the state entries that changed are written to the changelog, to the partition they belong to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import MutableMapping
from typing import Any, Iterator, Optional

import faust
from pydantic import ValidationError

from semwatch.config import SemwatchConfig
from semwatch.contract import RunEvent
from semwatch.contract.feedback import FalseAlarmMark
from semwatch.engine.core import Engine
from semwatch.ingest.validation import validate_record
from semwatch.settings import Settings
from sinks.base import IncidentSink
from sinks.kafka import KafkaIncidentSink
from sinks.log import LogSink
from sinks.metrics import MetricsSink, WorkerMetrics
from streams import faust_compat, hop, state_codec
from streams.reorder import ReorderBuffer

log = logging.getLogger("semwatch.worker")

REASON_HEADER = "semwatch.reason"
SOURCE_HEADER = "semwatch.src"  # input partition of a keyed record: the reorder buffer's source
DETAIL_HEADER = "semwatch.error"
WATERMARK_HEADER = "semwatch.wm"  # event time an input partition has reached (keyed topic)


def _header(msg, name: str) -> Optional[str]:
    headers = msg.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


class PartitionState(MutableMapping):
    """One partition's slice of the state table: keys are stored as ``"<partition>|<key>"``.

    A key whose value is None (a changelog record the state codec refused) has no state.
    """

    def __init__(self, store: MutableMapping, partition: int):
        self._store = store
        self._prefix = f"{partition}|"

    def __getitem__(self, key: str) -> Any:
        value = self._store[self._prefix + key]
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._store.get(self._prefix + key)
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[self._prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[self._prefix + key]

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return (k[n:] for k, v in list(self._store.items()) if k.startswith(self._prefix) and v is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class SemwatchApp:
    def __init__(self, settings: Settings, config: SemwatchConfig,
                 metrics: Optional[WorkerMetrics] = None):
        if not settings.store.startswith("memory://"):
            raise ValueError("store: only memory:// is supported (state is rebuilt from the changelog)")
        self.settings = settings
        self.config = config
        self.metrics = metrics or WorkerMetrics()
        self.partition_by = tuple(config.engine.partition_by)
        self.engines: dict[int, Engine] = {}
        self.buffers: dict[int, ReorderBuffer] = {}
        self._lock = asyncio.Lock()
        self._last_offsets: dict[Any, int] = {}
        self._source_wm: dict[int, float] = {}  # input partition -> highest event time validated
        self._flushing = False  # set on stop/rebalance: held events are processed, not held
        self._refused_seen = 0  # state records refused by the codec, already counted in metrics

        faust_compat.check()
        app = faust_compat.App(
            settings.app_id,
            broker=settings.faust_broker(),
            broker_credentials=settings.faust_credentials(),
            store=settings.store,
            autodiscover=False,
            web_enabled=False,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
            consumer_auto_offset_reset="earliest",
            # Small per-partition fetches keep the input partitions close in event time while a
            # backlog is consumed (one 4 MiB fetch is ~20 simulated minutes of one partition); a
            # record larger than this is still returned whole (KIP-74) and then dead-lettered.
            consumer_max_fetch_size=settings.fetch_partition_bytes,
            producer_max_request_size=max(1024 * 1024, settings.max_record_bytes * 16),
            stream_buffer_maxsize=max(4096, settings.batch_max * 2),
            # Batch produce requests: the keyed topic and the changelog get thousands of small
            # records per second; 16 KiB batches with no linger make one broker round trip each.
            producer_linger=settings.producer_linger_s,
            producer_max_batch_size=settings.producer_batch_bytes,
            broker_max_poll_records=settings.batch_max,
            table_standby_replicas=0,
            logging_config=None,
        )
        app.semwatch_fetch_max_wait_ms = int(settings.fetch_max_wait_s * 1000)
        self.app = app
        raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.runs_topic = app.topic(settings.topics.runs, partitions=settings.partitions, **raw)
        self.keyed_topic = app.topic(f"{settings.app_id}.runs.keyed", partitions=settings.partitions,
                                     internal=True, **raw)
        self.incidents_topic = app.topic(settings.topics.incidents, partitions=settings.partitions, **raw)
        self.dlq_topic = app.topic(settings.topics.dlq, partitions=settings.partitions, **raw)
        self.table = app.Table("state", default=None, partitions=settings.partitions,
                               schema=faust.Schema(key_type=str, key_serializer="json",
                                                   value_serializer=state_codec.CODEC_NAME))
        # Faust derives table serializers from key/value types only, and the changelog topic,
        # created with the table, overwrote the shared schema's serializers with its defaults
        # (json): recovery then failed to decode every state record. Both are set here.
        self.table.key_serializer = "json"
        self.table.value_serializer = state_codec.CODEC_NAME
        changelog = self.table.changelog_topic
        changelog.schema.key_serializer = changelog.key_serializer = "json"
        changelog.schema.value_serializer = changelog.value_serializer = state_codec.CODEC_NAME
        app.agent(self.runs_topic, name="validate")(self._validate)
        app.agent(self.keyed_topic, name="detect")(self._detect)
        if settings.otlp_enabled:
            self.otlp_topic = app.topic(settings.topics.otlp, partitions=settings.partitions, **raw)
            app.agent(self.otlp_topic, name="otlp")(self._otlp)
        self.feedback_topic = app.topic(settings.topics.feedback, partitions=settings.partitions, **raw)
        app.agent(self.feedback_topic, name="feedback")(self._feedback)
        self.metrics.declare_detectors(p.name for p in config.detector_params)
        app.timer(5.0, name="gauges")(self._update_gauges)
        app.timer(max(0.1, settings.reorder_idle_s / 4), name="release")(self._release_idle)
        app.task(self._announce_ready)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.before_wait_empty = self._process_held
        # Where incidents go, in this order at each checkpoint: the incidents topic (acked by the
        # broker), then the counters and the log.
        self.sinks: list[IncidentSink] = [KafkaIncidentSink(self.incidents_topic.send),
                                          MetricsSink(self.metrics), LogSink()]

    async def _announce_ready(self) -> None:
        # Tasks start after partition assignment and table recovery: the worker now processes.
        self._count_refused_records()
        self.metrics.ready.set(1)
        print(f"semwatch: worker ready (topic {self.settings.topics.runs})", file=sys.stderr, flush=True)

    # -- validate ------------------------------------------------------------------------------
    def partition_key(self, event: RunEvent) -> bytes:
        return "|".join(event.segment_value(f) or "" for f in self.partition_by).encode()

    async def _validate(self, stream) -> None:
        limit = self.settings.max_record_bytes
        async for events in stream.take_events(self.settings.batch_max, self.settings.batch_within_s):
            m = self.metrics
            # Valid events of this batch by (partition key, input partition), in arrival order:
            # each group travels as few packed records (streams/hop.py).
            groups: dict[tuple[bytes, int], list[bytes]] = defaultdict(list)
            sources: dict[int, float] = {}  # input partition -> its event-time high mark
            for ev in events:
                msg = ev.message
                m.received.inc()
                verdict = validate_record(msg.value, limit, now=time.time(),
                                          max_future_s=self.settings.max_future_skew_s,
                                          max_age_s=self.settings.max_event_age_s)
                if verdict.event is None:
                    await self.dead_letter(msg, verdict.reason or "schema", verdict.detail)
                else:
                    m.valid.inc()
                    groups[(self.partition_key(verdict.event), msg.partition)].append(msg.value)
                    high = max(verdict.event.ts, self._source_wm.get(msg.partition, -math.inf))
                    self._source_wm[msg.partition] = sources[msg.partition] = high
                self._last_offsets[msg.tp] = msg.offset
            for (key, source), values in groups.items():
                headers = [(SOURCE_HEADER, f"{source}".encode())]
                for record, _ in hop.pack(values, self.settings.hop_record_bytes):
                    await self.keyed_topic.send(key=key, value=record, headers=headers)
            await self._send_watermarks(sources)

    async def _send_watermarks(self, sources: dict[int, float]) -> None:
        """Tell every detect partition how far in event time each input partition of this batch got.

        Packed records are grouped by key, not in event-time order, so they carry no progress of
        their own: this record, sent after the batch's events on the same producer, tells a detect
        partition that the source's batch is complete and up to which event time. It goes to every
        partition, so a source with no recent event for a partition's keys does not hold that
        partition's reorder buffer back until it counts as idle.
        """
        for source, ts in sources.items():
            headers = [(SOURCE_HEADER, f"{source}".encode()), (WATERMARK_HEADER, repr(ts).encode())]
            for partition in range(self.settings.partitions):
                await self.keyed_topic.send(key=None, value=b"[]", partition=partition, headers=headers)

    async def dead_letter(self, msg, reason: str, detail: str) -> None:
        headers = list(msg.headers or [])
        headers += [(REASON_HEADER, reason.encode()), (DETAIL_HEADER, detail[:1000].encode()),
                    ("semwatch.source", f"{msg.topic}/{msg.partition}/{msg.offset}".encode())]
        await self.dlq_topic.send(key=msg.key, value=msg.value if msg.value is not None else b"",
                                  headers=headers)
        self.metrics.dead_lettered.labels(reason=reason).inc()
        log.warning("dead-lettered %s/%s/%s: %s: %s", msg.topic, msg.partition, msg.offset, reason,
                    detail[:200])

    # -- OpenTelemetry input ---------------------------------------------------------------------
    async def _otlp(self, stream) -> None:
        from semwatch.ingest import otlp as otel

        limit = self.settings.max_record_bytes
        async for ev in stream.events():
            msg = ev.message
            if msg.value is not None and len(msg.value) > limit * 16:
                await self.dead_letter(msg, "oversized", f"OTLP export of {len(msg.value)} bytes")
                continue
            try:
                export = otel.decode_export(msg.value or b"")
            except ValueError as exc:
                await self.dead_letter(msg, "invalid_json", f"OTLP: {exc}")
                continue
            events, rejected = otel.spans_to_events(export)
            for span_id, reason in rejected:
                self.metrics.otlp_spans_rejected.inc()
                log.warning("OTLP span %s skipped: %s", span_id, reason)
            for event in events:
                # Into the runs topic: from here on the same validation and detection as any producer.
                await self.runs_topic.send(key=str(event["run_id"]).encode(),
                                           value=json.dumps(event, separators=(",", ":")).encode())
            self.metrics.otlp_events.inc(len(events))

    # -- on-call feedback -----------------------------------------------------------------------
    async def _feedback(self, stream) -> None:
        """False-alarm marks (``semwatch mark-false-alarm``) -> ``semwatch_false_alarms_total``.

        Each worker counts the marks of its partitions of the feedback topic; Prometheus sums them
        (the rate against triggers is a recording rule, config/prometheus/semwatch-rules.yml)."""
        async for ev in stream.events():
            mark = self.read_mark(ev.message.value)
            if mark is None:
                self.metrics.feedback_invalid.inc()
                log.warning("ignored a record on %s that is not a false-alarm mark", self.settings.topics.feedback)
                continue
            self.metrics.false_alarm(mark.detector)
            log.info("false alarm marked: %s (%s)%s", mark.dedup_key, mark.detector,
                     f": {mark.reason[:120]}" if mark.reason else "")

    @staticmethod
    def read_mark(value: Optional[bytes]) -> Optional[FalseAlarmMark]:
        try:
            return FalseAlarmMark.model_validate_json(value or b"")
        except (ValidationError, ValueError):
            return None

    # -- detect --------------------------------------------------------------------------------
    def engine_for(self, partition: int) -> Engine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.config.build_engine(data=PartitionState(self.table.data, partition))
            self.engines[partition] = engine
        return engine

    async def _detect(self, stream) -> None:
        async for events in stream.take_events(self.settings.batch_max, self.settings.batch_within_s):
            for ev in events:
                msg = ev.message
                try:
                    packed = hop.unpack(msg.value or b"")
                except ValueError as exc:  # pydantic's ValidationError included
                    # Only the validate stage writes here; a broken record is somebody else's.
                    await self.dead_letter(msg, "schema", f"keyed record: {exc}")
                    continue
                # Held until every event in it is processed: take_events' own ack then leaves the
                # offset uncommitted, so a crash re-delivers what was still buffered.
                msg.incref(len(packed))
                buf = self.buffers.get(msg.partition)
                if buf is None:
                    buf = self.buffers[msg.partition] = ReorderBuffer(self.settings.reorder_idle_s)
                source = _header(msg, SOURCE_HEADER) or "?"
                # A packed record's events are grouped by key, not in event-time order across
                # keys: the source's progress comes from the watermark record that follows its
                # batch, not from the events themselves.
                for event in packed:
                    buf.add(source, event.ts, (event, ev), False)
                watermark = _header(msg, WATERMARK_HEADER)
                if watermark is not None:
                    try:
                        buf.advance(source, float(watermark))
                    except ValueError:
                        log.warning("ignored a malformed watermark header %r", watermark[:40])
            await self._release()

    async def _release_idle(self) -> None:
        # Sources that went quiet stop holding the others back even when no new batch arrives.
        if any(len(b) for b in self.buffers.values()):
            await self._release()

    async def _release(self) -> int:
        released = 0
        async with self._lock:
            for partition, buf in list(self.buffers.items()):
                ready = buf.drain() if self._flushing else buf.release()
                if ready:
                    released += len(ready)
                    await self._process(partition, ready)
            self.metrics.buffered.set(sum(len(b) for b in self.buffers.values()))
        return released

    async def _process_held(self) -> None:
        """Before a stop or rebalance: process every held event now, so that its offset commits.

        Like a source going idle, this gives up waiting for slower input partitions; their events
        may then arrive late. Until the partitions are reassigned, the detect agent's last batch
        (already fetched) is processed at once too.
        """
        self._flushing = True
        held = await self._release()
        if held:
            log.info("processed %d held events before a stop or rebalance, without waiting for "
                     "slower input partitions", held)

    async def _process(self, partition: int, ready: list) -> None:
        started = time.perf_counter()
        engine = self.engine_for(partition)
        before = _counts(engine)
        # One batch: released in event-time order across apps, so an app whose events come first
        # is not quiet while another app's later-dated events follow (semwatch/engine/core.py).
        incidents = engine.process_batch(event for event, _ in ready)
        self.metrics.engine_counts(before, _counts(engine))
        if incidents:
            self._export_open_incidents()
        self.metrics.processed.inc(len(ready))
        # Incidents are acknowledged by the broker before the state that remembers them is
        # written: a crash in between replays the events and re-emits the same incident
        # (same incident_id, deterministic), rather than a state that says "already paged"
        # for a page that was never sent.
        for inc in incidents:
            for sink in self.sinks:
                sink.add(inc)
        for sink in self.sinks:
            await sink.flush()
        await self._write_changelog(partition, engine)
        for _, ev in ready:
            ev.ack()
        self.metrics.processing.observe(time.perf_counter() - started)
        self.metrics.last_processed_ts.set(time.time())
        self.metrics.last_event_ts.set(ready[-1][0].ts)

    async def _write_changelog(self, partition: int, engine: Engine) -> None:
        """Write the changed state entries and wait until the broker has them all.

        Straight to the producer, not through Faust's Topic.send: a batch changes ~4 entries per
        event (per-run state), and Faust's per-record bookkeeping cost more than the detectors.
        The records are exactly what Table.send_changelog writes (JSON key, state codec value),
        so Faust's table recovery reads them back as before.
        """
        dirty, deleted = engine.pop_dirty()
        if not dirty and not deleted:
            return
        topic = self.table.changelog_topic.get_topic_name()
        send = self.app.producer.send
        prefix = f"{partition}|"
        pending = []
        for key in dirty:
            value = engine.data.get(key)
            if value is not None:
                pending.append(await send(topic, json.dumps(prefix + key).encode(),
                                          state_codec.dumps(value), partition, None, None))
        for key in deleted:
            pending.append(await send(topic, json.dumps(prefix + key).encode(), None, partition,
                                      None, None))
        # Acked by the broker before the events' offsets may be committed: a crash then replays
        # events onto a state that does not yet contain them, never the other way round.
        await asyncio.gather(*pending)

    async def _on_revoked(self, app, revoked, **kwargs) -> None:
        self._flushing = False  # after a rebalance's wait for acks: hold events again
        for tp in revoked:
            if tp.topic == self.keyed_topic.get_topic_name():
                # Rebuilt from the table after recovery (which may add records to it).
                self.engines.pop(tp.partition, None)
                self.buffers.pop(tp.partition, None)  # unacked: the new owner reads them again

    async def _on_assigned(self, app, assigned, **kwargs) -> None:
        """Forget the state of keyed partitions this worker no longer has.

        Not at revocation: every rebalance revokes the whole assignment first, and Faust's recovery
        of a partition assigned again reads its changelog only from where the table already is.
        Emptying the table there lost every state entry not written again since the last recovery
        (the kill-loop test: an open incident's state, never resolved). A partition that comes
        back later is recovered from the start of its changelog, onto an empty slice.
        """
        keyed = self.keyed_topic.get_topic_name()
        mine = {str(tp.partition) for tp in assigned if tp.topic == keyed}
        for key in [k for k in list(self.table.data.keys()) if k.partition("|")[0] not in mine]:
            self.table.data.pop(key, None)

    def _count_refused_records(self) -> None:
        # The codec is one object per process, without the worker's metrics: it counts, we export.
        total = state_codec.refused_total()
        if total > self._refused_seen:
            self.metrics.state_records_refused.inc(total - self._refused_seen)
            self._refused_seen = total

    async def _update_gauges(self) -> None:
        self._count_refused_records()
        consumer = self.app.consumer
        lag = 0
        for tp, offset in list(self._last_offsets.items()):
            try:
                high = consumer.highwater(tp)
            except Exception:  # partition no longer assigned
                self._last_offsets.pop(tp, None)
                continue
            if high is not None:
                lag += max(0, high - offset - 1)
        self.metrics.consumer_lag.set(lag)
        counts: dict[str, int] = defaultdict(int)
        for engine in list(self.engines.values()):
            for name, n in engine.segments_active().items():
                counts[name] += n
        for name, n in counts.items():
            self.metrics.segments_active.labels(detector=name).set(n)
        self._export_open_incidents()

    def _export_open_incidents(self) -> None:
        # Open incidents from the engines' own state: right after a restart and after a
        # rebalance (a partition's incidents move with it), unlike a count of records sent.
        self.metrics.set_open_incidents(o for engine in list(self.engines.values())
                                        for o in engine.open_incidents())


def _counts(engine: Engine) -> dict:
    """The engine's counters a worker exports, as they stand (the metrics take the differences)."""
    st = engine.stats
    return {"late": st.late, "duplicates": st.duplicates, "detector_errors": dict(st.detector_errors),
            "evicted": dict(st.evicted), "refused": dict(st.refused),
            "suppressed": dict(engine.problems.suppressed_by_detector)}
