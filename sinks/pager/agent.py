"""``semwatch page``: the pager agent's process. Reads ``semwatch.incidents`` in a consumer group,
queues each record on every target's lane (:mod:`sinks.pager.dispatch`), commits offsets only past
records every target is done with (:mod:`sinks.pager.offsets`), serves /metrics, re-sends open
alerts to Alertmanager, and stops gracefully on SIGTERM.

Start-up: create and read the ledger topic (:mod:`sinks.pager.ledger`), the pager's memory of
what each target already has; only then join the group. A pager without a ledger yet (one that
ran before the ledger existed) takes the incidents topic up to its group's committed offsets as
delivered instead, once, and writes that to the ledger.

A malformed record is logged and counted (outcome ``rejected``, ``event_action="unknown"`` when it
has none), then committed: never fatal.

Settings: :class:`semwatch.settings.Settings` (targets: ``SEMWATCH_ALERTMANAGER_URL``,
``SEMWATCH_PAGERDUTY_URL``, ``SEMWATCH_PAGERDUTY_ROUTING_KEY``; delivery: ``SEMWATCH_PAGER__*``);
command-line flags win. The routing key has no flag: it comes from the environment only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any, Optional

from semwatch.settings import Settings, SettingsError, load_settings
from sinks.pager.alertmanager import AlertmanagerTarget, check_segment_labels
from sinks.pager.delivery import HttpSender, RetryPolicy
from sinks.pager.dispatch import Pager, Target
from sinks.pager.ledger import KafkaLedger
from sinks.pager.metrics import PagerMetrics
from sinks.pager.offsets import OffsetTracker
from sinks.pager.pagerduty import DEFAULT_URL as PAGERDUTY_DEFAULT_URL
from sinks.pager.pagerduty import PagerDutyTarget

log = logging.getLogger("semwatch.pager")

DEFAULT_METRICS_PORT = 9465
DEFAULT_GROUP = "semwatch-pager"
ENV_ROUTING_KEY = "SEMWATCH_PAGERDUTY_ROUTING_KEY"
ENV_ALERTMANAGER_URL = "SEMWATCH_ALERTMANAGER_URL"
ENV_PAGERDUTY_URL = "SEMWATCH_PAGERDUTY_URL"

# --flag (argparse dest) -> the field of settings.pager it overrides.
PAGER_FLAGS = ("request_timeout_s", "backoff_base_s", "backoff_max_s", "resend_interval_s", "segment_labels",
               "lru_size", "max_backlog")
# Flags of the pager that gave pages up; accepted so that deployments keep starting, and ignored.
RETIRED_FLAGS = ("max_attempts", "retry_deadline_s")


# -- settings and targets ------------------------------------------------------------------------------
def pager_settings(args: Any) -> Settings:
    """Settings from the environment (and settings file), with the command line's flags on top."""
    overrides: dict[str, Any] = {}
    for flag, name in (("broker", "broker_url"), ("alertmanager_url", "alertmanager_url"),
                       ("pagerduty_url", "pagerduty_url")):
        if getattr(args, flag, None):
            overrides[name] = getattr(args, flag)
    pager = {name: getattr(args, name) for name in PAGER_FLAGS if getattr(args, name, None) is not None}
    if pager:
        overrides["pager"] = pager
    settings = load_settings(**overrides)
    if settings.pagerduty_url and not settings.pagerduty_routing_key:
        raise SettingsError(f"a PagerDuty URL is set ({settings.pagerduty_url}) but {ENV_ROUTING_KEY} is not: "
                            f"export the Events API v2 integration key in {ENV_ROUTING_KEY}")
    if not settings.alertmanager_url and not settings.pagerduty_routing_key:
        raise SettingsError(
            f"no paging target configured: set --alertmanager-url (or {ENV_ALERTMANAGER_URL}) "
            f"and/or {ENV_ROUTING_KEY} (PagerDuty Events API v2; URL from --pagerduty-url or "
            f"{ENV_PAGERDUTY_URL}, default {PAGERDUTY_DEFAULT_URL})")
    try:
        check_segment_labels(settings.pager.segment_labels)
    except ValueError as exc:
        raise SettingsError(f"setting pager.segment_labels (--segment-labels or "
                            f"SEMWATCH_PAGER__SEGMENT_LABELS): {exc}") from None
    return settings


def target_names(settings: Settings) -> list[str]:
    return [name for name, on in (("alertmanager", settings.alertmanager_url),
                                  ("pagerduty", settings.pagerduty_routing_key)) if on]


def retry_policy(settings: Settings) -> RetryPolicy:
    p = settings.pager
    return RetryPolicy(timeout_s=p.request_timeout_s, backoff_base_s=p.backoff_base_s, backoff_max_s=p.backoff_max_s)


def build_targets(settings: Settings, sender: HttpSender) -> list[Target]:
    targets: list[Target] = []
    if settings.alertmanager_url:
        targets.append(AlertmanagerTarget(settings.alertmanager_url, sender,
                                          segment_labels=settings.pager.segment_labels,
                                          max_open=settings.pager.max_open))
    if settings.pagerduty_routing_key:
        targets.append(PagerDutyTarget(settings.pagerduty_url, settings.pagerduty_routing_key.get_secret_value(),
                                       sender))
    return targets


# -- Kafka ---------------------------------------------------------------------------------------------
async def _commit(consumer, tracker: OffsetTracker, partitions=None) -> None:
    from aiokafka.errors import KafkaError

    offsets = {tp: o for tp, o in tracker.committable().items() if partitions is None or tp in partitions}
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
        tracker.committed(offsets)
    except KafkaError as exc:  # e.g. a rebalance: the records come again, and the ledger knows them
        log.warning("committing offsets failed (%s); records may be read again", exc)


async def restore_from_topic(consumer, reader_factory, topic: str, pager: Pager, timeout_s: float = 60.0) -> int:
    """For a pager without a ledger: read the incidents topic up to the group's committed offsets
    into the pager's memory as delivered, sending nothing. Returns the records read."""
    from aiokafka import TopicPartition

    await consumer.topics()  # refresh metadata
    todo = {}
    for p in sorted(consumer.partitions_for_topic(topic) or ()):
        tp = TopicPartition(topic, p)
        committed = await consumer.committed(tp)
        if committed:
            todo[tp] = committed
    if not todo:
        return 0
    reader = reader_factory()
    await reader.start()
    n = 0
    try:
        reader.assign(list(todo))
        await reader.seek_to_beginning(*todo)
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for tp, records in (await reader.getmany(timeout_ms=500, max_records=1000)).items():
                for rec in records:
                    if rec.offset < todo.get(tp, 0):
                        n += pager.restore_value(rec.value)
            for tp in list(todo):
                if await reader.position(tp) >= todo[tp]:
                    del todo[tp]
        if todo:
            log.warning("reading handled records incomplete after %.0fs (partitions %s); continuing",
                        timeout_s, ", ".join(str(tp.partition) for tp in todo))
    finally:
        await reader.stop()
    return n


def kafka_kwargs(settings: Settings) -> dict[str, Any]:
    return dict(bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs())


async def serve(settings: Settings, pager: Pager, ledger: KafkaLedger, *, topic: str, group_id: str,
                offset_reset: str, stop: asyncio.Event, warm_start: bool = True, stop_grace_s: float = 10.0) -> int:
    """Run until ``stop`` is set; ``ledger`` is ``pager.ledger``, started and stopped here."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(
        group_id=group_id, client_id="semwatch-pager", enable_auto_commit=False,
        auto_offset_reset=offset_reset, max_poll_records=100,
        fetch_max_wait_ms=int(settings.fetch_max_wait_s * 1000),
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=max(1000, int(settings.session_timeout_s * 1000 / 3)), **kafka_kwargs(settings))
    tracker = OffsetTracker()

    class Listener(ConsumerRebalanceListener):
        announced = False

        async def on_partitions_revoked(self, revoked) -> None:
            if revoked:
                log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))
                await _commit(consumer, tracker, set(revoked))
                for tp in revoked:  # queued records of these still go out; their offsets are not ours
                    tracker.forget(tp)

        async def on_partitions_assigned(self, assigned) -> None:
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
            if not Listener.announced:
                Listener.announced = True
                print(f"semwatch: pager ready (topic {topic}, group {group_id}, "
                      f"{len(assigned)} partition(s))", file=sys.stderr, flush=True)

    try:
        await consumer.start()
        await ledger.start()
    except (KafkaError, RuntimeError) as exc:
        log.error("cannot start the pager's Kafka clients at %s: %s", settings.bootstrap_servers(), exc)
        await ledger.stop()
        await consumer.stop()
        return 1
    resender: Optional[asyncio.Task] = None
    started = False
    try:
        try:
            known = await pager.restore()
        except RuntimeError as exc:  # the ledger could not be read in time: no half a memory
            log.error("%s", exc)
            return 1
        log.info("ledger %s: %d dedup key(s) known", ledger.topic, known)
        # Wait for the workers to create the topic rather than subscribe to a missing one: a
        # subscription can auto-create it with the broker's default partition count.
        waited = 0.0
        while topic not in await consumer.topics():
            if waited == 0.0:
                log.warning("topic %s does not exist yet; waiting for the workers to create it", topic)
            if stop.is_set():
                return 0
            await asyncio.sleep(1.0)
            waited += 1.0
        if not known and warm_start:
            n = await restore_from_topic(consumer, lambda: AIOKafkaConsumer(
                group_id=None, client_id="semwatch-pager-restore", enable_auto_commit=False,
                **kafka_kwargs(settings)), topic, pager)
            if n:
                await pager.save_memory()
                log.info("warm start: %d incident record(s) already handled, written to the ledger", n)
        pager.start()
        started = True
        consumer.subscribe([topic], listener=Listener())
        am = pager.lanes.get("alertmanager")
        if am is not None and isinstance(am.target, AlertmanagerTarget):
            resender = asyncio.create_task(_resend_loop(am, settings.pager.resend_interval_s))
        paused = False
        while not stop.is_set():
            # A long outage at one target: stop reading (the group stays alive) until it catches up.
            # (Paused again on every round: partitions assigned meanwhile are paused too.)
            full = pager.undelivered() >= settings.pager.max_backlog
            if full or paused:
                (consumer.pause if full else consumer.resume)(*consumer.assignment())
            if full != paused:
                log.warning("backlog of %d page(s): %s reading", pager.undelivered(),
                            "pausing" if full else "resuming")
                paused = full
            batch = await consumer.getmany(timeout_ms=500, max_records=100)
            for tp, records in batch.items():
                for rec in records:
                    tracker.take(tp, rec.offset, len(pager.lanes))
                    pager.submit(rec.value, where=f"{tp.topic}[{tp.partition}]@{rec.offset}",
                                 on_done=lambda tp=tp, offset=rec.offset: tracker.done(tp, offset))
            await _commit(consumer, tracker)
        return 0
    finally:
        if resender is not None:
            resender.cancel()
            await asyncio.gather(resender, return_exceptions=True)
        if started:
            if not await pager.drain(stop_grace_s):
                log.warning("stopping with %d page(s) not delivered; they are read again after a restart",
                            pager.undelivered())
            await pager.stop()
            await _commit(consumer, tracker)
        await ledger.stop()
        await consumer.stop()


async def _resend_loop(lane, interval_s: float) -> None:
    """Every interval, queue a re-send of the open alerts on Alertmanager's lane."""
    while True:
        await asyncio.sleep(interval_s)
        if lane.target.open:
            lane.call_soon(lane.target.resend_open)


# -- command line --------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    defaults = Settings.model_fields["pager"].default
    parser.add_argument("--broker", help="Kafka bootstrap (kafka://host:9092); default: SEMWATCH_BROKER_URL")
    parser.add_argument("--alertmanager-url", help="Alertmanager base URL, e.g. http://alertmanager:9093 "
                        f"(default: {ENV_ALERTMANAGER_URL})")
    parser.add_argument("--pagerduty-url", help=f"PagerDuty Events API base URL (default: {ENV_PAGERDUTY_URL}, "
                        f"else {PAGERDUTY_DEFAULT_URL}). The routing key is read only from "
                        f"{ENV_ROUTING_KEY}")
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                        help=f"port for /metrics (default {DEFAULT_METRICS_PORT}; 0 = any free port)")
    parser.add_argument("--topic", help="incidents topic (default: SEMWATCH_TOPICS__INCIDENTS or semwatch.incidents)")
    parser.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group (default {DEFAULT_GROUP})")
    parser.add_argument("--offset-reset", choices=("earliest", "latest"), default="earliest",
                        help="where a group without committed offsets starts (default earliest: no page "
                        "is lost, and the ledger keeps what was paged from being paged again)")
    parser.add_argument("--no-warm-start", action="store_true",
                        help="with an empty ledger, do not take the records before the group's committed "
                        "offsets as delivered")
    # The flags below default to None: unset, the setting (SEMWATCH_PAGER__<NAME>) applies.
    parser.add_argument("--resend-interval-s", type=float,
                        help=f"re-send open alerts to Alertmanager this often (default "
                        f"{defaults.resend_interval_s:g}; keep it well below Alertmanager's resolve_timeout)")
    parser.add_argument("--request-timeout-s", type=float,
                        help=f"one request (default {defaults.request_timeout_s:g})")
    parser.add_argument("--backoff-base-s", type=float,
                        help=f"first retry delay (default {defaults.backoff_base_s:g})")
    parser.add_argument("--backoff-max-s", type=float,
                        help=f"largest retry delay (default {defaults.backoff_max_s:g}); pages are retried "
                        "until delivered")
    parser.add_argument("--segment-labels",
                        help=f"segment keys sent as Alertmanager labels (default {','.join(defaults.segment_labels)})")
    parser.add_argument("--lru-size", type=int,
                        help=f"resolved problems remembered per target for dedup (default {defaults.lru_size})")
    parser.add_argument("--max-backlog", type=int,
                        help=f"stop reading while a target has this many pages waiting (default {defaults.max_backlog})")
    parser.add_argument("--stop-grace-s", type=float, default=10.0,
                        help="on SIGTERM, let waiting pages go out for this long (default 10); what is "
                        "left is not committed and is delivered after a restart")
    for name in RETIRED_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=float, help=argparse.SUPPRESS)


def run(args) -> int:
    settings = pager_settings(args)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in RETIRED_FLAGS:
        if getattr(args, name, None) is not None:
            log.warning("--%s is ignored: pages are retried until the target takes or refuses them",
                        name.replace("_", "-"))
    if not settings.broker_url:
        raise SettingsError("the pager needs a broker: --broker or SEMWATCH_BROKER_URL "
                            "(it reads the incidents topic the workers write)")
    topic = getattr(args, "topic", None) or settings.topics.incidents
    metrics = PagerMetrics(targets=target_names(settings))
    wanted = args.metrics_port if args.metrics_port is not None else DEFAULT_METRICS_PORT
    try:
        port = metrics.serve(wanted)
    except OSError as exc:
        raise SettingsError(f"cannot serve /metrics on port {wanted} ({exc}); choose another with "
                            "--metrics-port (0 = any free port)") from None
    print(f"semwatch: pager metrics at http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    sender = HttpSender(metrics, retry_policy(settings))
    targets = build_targets(settings, sender)
    print("semwatch: paging " + ", ".join(repr(t) for t in targets), file=sys.stderr, flush=True)
    ledger = KafkaLedger(settings.topics.pager_delivered, kafka_kwargs(settings))
    pager = Pager(targets, metrics, ledger=ledger, lru_size=settings.pager.lru_size)
    try:
        return asyncio.run(_main(settings, pager, ledger, topic=topic, group_id=args.group,
                                 offset_reset=args.offset_reset, warm_start=not args.no_warm_start,
                                 stop_grace_s=args.stop_grace_s))
    finally:
        sender.close()


async def _main(settings: Settings, pager: Pager, ledger: KafkaLedger, *, topic: str, group_id: str, offset_reset: str,
                warm_start: bool, stop_grace_s: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(serve(settings, pager, ledger, topic=topic, group_id=group_id, offset_reset=offset_reset,
                                     stop=stop, warm_start=warm_start, stop_grace_s=stop_grace_s))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            # serve() drains for stop_grace_s itself; this bounds a Kafka client that hangs.
            done, _ = await asyncio.wait({task}, timeout=stop_grace_s + 15)
            if not done:
                log.warning("stopping: the Kafka clients did not close in time")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return 0
        return task.result()
    finally:
        stopping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
