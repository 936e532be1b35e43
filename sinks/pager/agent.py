"""``semwatch page``: the pager agent's process. Reads ``semwatch.incidents`` in a consumer group
and hands each record to :class:`~sinks.pager.dispatch.Pager`; serves /metrics; re-sends open
alerts to Alertmanager; stops gracefully on SIGTERM.

- At least once: offsets (group ``semwatch-pager``) are committed only after a record was handled
  by every target, so a crashed pager re-reads what it had not delivered.
- Alertmanager forgets alerts that are not re-sent within its ``resolve_timeout``: open alerts are
  re-sent every ``resend_interval_s``. On start the pager rebuilds its open set from the topic up
  to the group's committed offsets (a warm start), so a restart neither drops open alerts nor
  re-pages.
- A malformed record is logged and counted (outcome ``rejected``, ``event_action="unknown"`` when
  it has none), then committed: never fatal.

Settings: :class:`semwatch.settings.Settings` (targets: ``SEMWATCH_ALERTMANAGER_URL``,
``SEMWATCH_PAGERDUTY_URL``, ``SEMWATCH_PAGERDUTY_ROUTING_KEY``; delivery: ``SEMWATCH_PAGER__*``);
command-line flags win. The routing key has no flag: it comes from the environment only.
"""

from __future__ import annotations

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
from sinks.pager.metrics import PagerMetrics
from sinks.pager.pagerduty import DEFAULT_URL as PAGERDUTY_DEFAULT_URL
from sinks.pager.pagerduty import PagerDutyTarget

log = logging.getLogger("semwatch.pager")

DEFAULT_METRICS_PORT = 9465
DEFAULT_GROUP = "semwatch-pager"
ENV_ROUTING_KEY = "SEMWATCH_PAGERDUTY_ROUTING_KEY"
ENV_ALERTMANAGER_URL = "SEMWATCH_ALERTMANAGER_URL"
ENV_PAGERDUTY_URL = "SEMWATCH_PAGERDUTY_URL"

# --flag (argparse dest) -> field of settings.pager it overrides.
PAGER_FLAGS = {"max_attempts": "max_attempts", "retry_deadline_s": "retry_deadline_s",
               "request_timeout_s": "request_timeout_s", "backoff_base_s": "backoff_base_s",
               "backoff_max_s": "backoff_max_s", "resend_interval_s": "resend_interval_s",
               "segment_labels": "segment_labels", "lru_size": "lru_size"}


# -- settings and targets ------------------------------------------------------------------------------
def pager_settings(args: Any) -> Settings:
    """Settings from the environment (and settings file), with the command line's flags on top."""
    overrides: dict[str, Any] = {}
    for flag, name in (("broker", "broker_url"), ("alertmanager_url", "alertmanager_url"),
                       ("pagerduty_url", "pagerduty_url")):
        if getattr(args, flag, None):
            overrides[name] = getattr(args, flag)
    pager = {field: getattr(args, flag) for flag, field in PAGER_FLAGS.items()
             if getattr(args, flag, None) is not None}
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
    return RetryPolicy(max_attempts=p.max_attempts, deadline_s=p.retry_deadline_s, timeout_s=p.request_timeout_s,
                       backoff_base_s=p.backoff_base_s, backoff_max_s=p.backoff_max_s)


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
async def _commit(consumer, offsets: dict) -> None:
    from aiokafka.errors import KafkaError

    try:
        await consumer.commit(offsets)
    except KafkaError as exc:  # e.g. a rebalance: the record comes again, and dedup catches it
        log.warning("committing offsets failed (%s); records may be delivered again", exc)


async def restore_state(consumer, reader_factory, topic: str, pager: Pager, timeout_s: float = 60.0) -> int:
    """Warm start: read the incidents topic up to the group's committed offsets into the pager's
    state (open alerts, delivered ids), sending nothing. Returns the records read."""
    from aiokafka import TopicPartition

    await consumer.topics()  # refresh metadata
    parts = consumer.partitions_for_topic(topic) or set()
    todo = {}
    for p in sorted(parts):
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
            batch = await reader.getmany(timeout_ms=500, max_records=1000)
            for tp, records in batch.items():
                end = todo.get(tp, 0)
                for rec in records:
                    if rec.offset < end:
                        pager.restore_value(rec.value)
                        n += 1
            for tp in list(todo):
                if await reader.position(tp) >= todo[tp]:
                    del todo[tp]
        if todo:
            log.warning("warm start incomplete after %.0fs (%s); continuing", timeout_s,
                        ", ".join(f"{tp.partition}" for tp in todo))
    finally:
        await reader.stop()
    return n


async def serve(settings, pager: Pager, *, topic: str, group_id: str, offset_reset: str,
                resend_interval_s: float, stop: asyncio.Event, warm_start: bool = True) -> int:
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    from aiokafka.errors import KafkaError

    kafka_kwargs = dict(bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs())
    consumer = AIOKafkaConsumer(
        group_id=group_id, client_id="semwatch-pager", enable_auto_commit=False,
        auto_offset_reset=offset_reset, max_poll_records=100,
        fetch_max_wait_ms=int(settings.fetch_max_wait_s * 1000),
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=max(1000, int(settings.session_timeout_s * 1000 / 3)), **kafka_kwargs)

    class Listener(ConsumerRebalanceListener):
        announced = False

        async def on_partitions_revoked(self, revoked) -> None:
            if revoked:
                log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

        async def on_partitions_assigned(self, assigned) -> None:
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
            if not Listener.announced:
                Listener.announced = True
                print(f"semwatch: pager ready (topic {topic}, group {group_id}, "
                      f"{len(assigned)} partition(s))", file=sys.stderr, flush=True)

    try:
        await consumer.start()
    except KafkaError as exc:
        log.error("cannot connect to Kafka at %s: %s", settings.bootstrap_servers(), exc)
        await consumer.stop()
        return 1
    resender: Optional[asyncio.Task] = None
    try:
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
        if warm_start:
            try:
                n = await restore_state(consumer, lambda: AIOKafkaConsumer(
                    group_id=None, client_id="semwatch-pager-restore", enable_auto_commit=False,
                    **kafka_kwargs), topic, pager)
                if n:
                    log.info("warm start: %d incident record(s) already handled", n)
            except KafkaError as exc:
                log.warning("warm start skipped (%s): open alerts are not re-sent until they "
                            "come again", exc)
        consumer.subscribe([topic], listener=Listener())
        am = pager.target("alertmanager")
        if isinstance(am, AlertmanagerTarget):
            resender = asyncio.create_task(_resend_loop(am, resend_interval_s))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=100)
            for tp, records in batch.items():
                for rec in records:
                    await pager.handle_value(rec.value, where=f"{tp.topic}[{tp.partition}]@{rec.offset}")
                    # Commit after each record: pages are few, and a crash then re-sends at most one.
                    await _commit(consumer, {tp: rec.offset + 1})
                    if stop.is_set():
                        break
                if stop.is_set():
                    break
        return 0
    finally:
        if resender is not None:
            resender.cancel()
            await asyncio.gather(resender, return_exceptions=True)
        await consumer.stop()


async def _resend_loop(am: AlertmanagerTarget, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        if am.open:
            try:
                n = await am.resend_open()
                log.debug("re-sent %d open alert(s) to Alertmanager", n)
            except Exception:  # noqa: BLE001 - keep re-sending next time
                log.exception("re-sending open alerts failed")


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
                        "is lost; use latest for a first deployment onto a topic with old incidents)")
    parser.add_argument("--no-warm-start", action="store_true",
                        help="do not rebuild open alerts from the topic on start")
    # The flags below default to None: unset, the setting (SEMWATCH_PAGER__<NAME>) applies.
    parser.add_argument("--resend-interval-s", type=float,
                        help=f"re-send open alerts to Alertmanager this often (default "
                        f"{defaults.resend_interval_s:g}; keep it well below Alertmanager's resolve_timeout)")
    parser.add_argument("--max-attempts", type=int,
                        help=f"HTTP attempts per page (default {defaults.max_attempts})")
    parser.add_argument("--retry-deadline-s", type=float,
                        help=f"total time per page and target, retries included (default {defaults.retry_deadline_s:g})")
    parser.add_argument("--request-timeout-s", type=float,
                        help=f"one request (default {defaults.request_timeout_s:g})")
    parser.add_argument("--backoff-base-s", type=float,
                        help=f"first retry delay (default {defaults.backoff_base_s:g})")
    parser.add_argument("--backoff-max-s", type=float,
                        help=f"largest retry delay (default {defaults.backoff_max_s:g})")
    parser.add_argument("--segment-labels",
                        help=f"segment keys sent as Alertmanager labels (default {','.join(defaults.segment_labels)})")
    parser.add_argument("--lru-size", type=int,
                        help=f"delivered pages remembered for dedup (default {defaults.lru_size})")
    parser.add_argument("--stop-grace-s", type=float, default=10.0,
                        help="on SIGTERM, let an in-flight page finish this long (default 10); an "
                        "unfinished page is not committed and is delivered again after a restart")


def run(args) -> int:
    settings = pager_settings(args)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    pager = Pager(targets, metrics, lru_size=settings.pager.lru_size)
    try:
        return asyncio.run(_main(settings, pager, topic=topic, group_id=args.group,
                                 offset_reset=args.offset_reset, warm_start=not args.no_warm_start,
                                 stop_grace_s=args.stop_grace_s))
    finally:
        sender.close()


async def _main(settings: Settings, pager: Pager, *, topic: str, group_id: str, offset_reset: str,
                warm_start: bool, stop_grace_s: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(serve(settings, pager, topic=topic, group_id=group_id, offset_reset=offset_reset,
                                     resend_interval_s=settings.pager.resend_interval_s, stop=stop,
                                     warm_start=warm_start))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("stopping (a page in flight gets up to %.0fs to finish)", stop_grace_s)
            done, _ = await asyncio.wait({task}, timeout=stop_grace_s)
            if not done:
                log.warning("stopping: cancelling an unfinished page; it is delivered again after a restart")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return 0
        return task.result()
    finally:
        stopping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
