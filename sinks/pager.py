"""``semwatch page``: the pager agent. Incident records (``semwatch.incidents``) -> Alertmanager and/or
PagerDuty Events API v2.

- At least once: a consumer group (``semwatch-pager``) whose offsets are committed only after a
  record was handled by every target, so a crashed pager re-reads what it had not delivered.
- Idempotent: per target, a bounded LRU of delivered ``(dedup_key, event_action, incident_id)`` and
  the set of open dedup keys. A redelivered record, or another trigger for a dedup key that is
  already open, counts outcome ``duplicate`` and is not sent to PagerDuty again (Alertmanager gets the
  open alert re-sent, which is harmless and refreshes it).
- Bounded delivery: retries with exponential backoff and jitter on 5xx, 408, 429 (honouring
  ``Retry-After``) and timeouts / connection errors, within a number of attempts and a total
  deadline; any other 4xx is ``rejected`` at once (the response body is logged). Targets are
  delivered to concurrently, so one slow target never holds up another beyond its own deadline.
  After the deadline the page counts ``failed`` and the pager moves on (the Prometheus safety-net
  alert SemwatchIncidentOpen and SemwatchPagerDeliveryFailing cover a lost page).
- Alertmanager forgets alerts that are not re-sent within its ``resolve_timeout``: open alerts are
  re-sent every ``--resend-interval-s``. On start the pager rebuilds its open set from the topic up
  to the group's committed offsets (a warm start), so a restart neither drops open alerts nor
  re-pages.
- A malformed record is logged and counted (outcome ``rejected``, ``event_action="unknown"`` when
  it has none), then committed: never fatal.

Metrics (private registry, ``--metrics-port``, default 9465); names are fixed by
config/prometheus/semwatch-rules.yml:
``semwatch_pages_total{target,event_action,outcome}``, ``semwatch_page_attempts_total{target}``,
``semwatch_page_delivery_seconds``, ``semwatch_pager_last_success_timestamp_seconds{target}``.

Secrets come only from the environment: ``SEMWATCH_PAGERDUTY_ROUTING_KEY``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import random
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Optional, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server
from pydantic import ValidationError

from semwatch.contract import Incident, describe_validation_error, parse_ts
from semwatch.settings import SettingsError, load_settings
from sinks.alertmanager import DEFAULT_SEGMENT_LABELS, AlertmanagerTarget, check_segment_labels
from sinks.pagerduty import DEFAULT_URL as PAGERDUTY_DEFAULT_URL
from sinks.pagerduty import PagerDutyTarget

disable_created_metrics()

log = logging.getLogger("semwatch.pager")

DEFAULT_METRICS_PORT = 9465
DEFAULT_GROUP = "semwatch-pager"
ENV_ROUTING_KEY = "SEMWATCH_PAGERDUTY_ROUTING_KEY"
ENV_ALERTMANAGER_URL = "SEMWATCH_ALERTMANAGER_URL"
ENV_PAGERDUTY_URL = "SEMWATCH_PAGERDUTY_URL"

TARGETS = ("alertmanager", "pagerduty")
ACTIONS = ("trigger", "resolve")
OUTCOMES = ("delivered", "duplicate", "failed", "rejected")
RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
MAX_LOGGED_BODY = 2000


# -- metrics -------------------------------------------------------------------------------------------
class PagerMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None, targets: Iterable[str] = ()):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pages = Counter("semwatch_pages", "Incident records handled per target, by outcome.",
                             ["target", "event_action", "outcome"], registry=r)
        self.attempts = Counter("semwatch_page_attempts", "HTTP requests sent to a target, retries "
                                "and re-sends of open alerts included.", ["target"], registry=r)
        self.delivery = Histogram(
            "semwatch_page_delivery_seconds", "Time from taking up a page to its final outcome, "
            "retries included.", buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r)
        self.last_success = Gauge("semwatch_pager_last_success_timestamp_seconds",
                                  "Wall-clock time of the last successful request to a target.",
                                  ["target"], registry=r)
        for target in targets:  # export zeros, so rate() and increase() work from the start
            self.attempts.labels(target)
            for action in ACTIONS:
                for outcome in OUTCOMES:
                    self.pages.labels(target, action, outcome)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics; port 0 picks a free one. Returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_port


# -- HTTP with retries -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    deadline_s: float = 60.0  # total time for one page, sleeps and requests included
    timeout_s: float = 10.0  # one request
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.deadline_s, self.timeout_s) <= 0 or self.backoff_base_s < 0:
            raise ValueError("deadline, timeout and backoff must be positive")

    def backoff(self, attempt: int, rng: random.Random, retry_after: Optional[float] = None) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries of many
        pagers spread out but never hammer back at once. A server's Retry-After wins (capped)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class Delivery:
    outcome: str  # delivered | rejected | failed
    attempts: int
    status: Optional[int] = None
    detail: str = ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect of a POST is a misconfigured URL: report it (as a rejected page) instead of
    # urllib silently turning it into a GET.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


class HttpSender:
    """POSTs JSON with retries. Standard library only (urllib in a small thread pool) rather than
    aiohttp: the pager sends a handful of requests a minute, so a thread per request costs nothing,
    and semwatch does not take a direct dependency on aiohttp (it only arrives with Faust, which the
    pager does not use). Requests are bounded by their socket timeout, so a hung target holds a
    thread at most ``timeout_s``."""

    def __init__(self, metrics: PagerMetrics, policy: RetryPolicy = RetryPolicy(), *, max_workers: int = 8,
                 rng: Optional[random.Random] = None, user_agent: str = "semwatch-pager"):
        self.metrics = metrics
        self.policy = policy
        self.rng = rng or random.Random()
        self.user_agent = user_agent
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="semwatch-pager-http")
        self._opener = urllib.request.build_opener(_NoRedirect())

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _post(self, url: str, body: bytes, timeout: float) -> tuple[Optional[int], str, Optional[str], str]:
        """One request (in a worker thread): (status, body, Retry-After, error)."""
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json", "User-Agent": self.user_agent})
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read(64 * 1024).decode("utf-8", "replace"), None, ""
        except urllib.error.HTTPError as exc:
            try:
                text = exc.read(64 * 1024).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                text = ""
            return exc.code, text, exc.headers.get("Retry-After") if exc.headers else None, ""
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, "", None, f"{type(reason).__name__}: {reason}"

    async def post_json(self, target: str, url: str, payload: Any) -> Delivery:
        body = json.dumps(payload, separators=(",", ":")).encode()
        policy, loop = self.policy, asyncio.get_running_loop()
        deadline = time.monotonic() + policy.deadline_s
        attempt = 0
        while True:
            attempt += 1
            timeout = max(0.05, min(policy.timeout_s, deadline - time.monotonic()))
            self.metrics.attempts.labels(target).inc()
            try:
                status, text, retry_after, error = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self._post, url, body, timeout), timeout + 5)
            except asyncio.TimeoutError:  # belt and braces: the socket timeout should fire first
                status, text, retry_after, error = None, "", None, f"no answer within {timeout:.1f}s"
            if status is not None and 200 <= status < 300:
                self.metrics.last_success.labels(target).set(time.time())
                return Delivery("delivered", attempt, status)
            retryable = status is None or status >= 500 or status in RETRY_STATUSES
            what = error or f"HTTP {status}"
            if not retryable:
                log.error("%s rejected the request (%s, not retried): %s", target, what,
                          text[:MAX_LOGGED_BODY] or "(empty body)")
                return Delivery("rejected", attempt, status, text[:MAX_LOGGED_BODY])
            delay = policy.backoff(attempt, self.rng, _retry_after(retry_after))
            if attempt >= policy.max_attempts or time.monotonic() + delay >= deadline:
                log.error("%s: giving up after %d attempt(s): %s %s", target, attempt, what,
                          text[:MAX_LOGGED_BODY])
                return Delivery("failed", attempt, status, error or text[:MAX_LOGGED_BODY])
            log.warning("%s: attempt %d failed (%s); retrying in %.2fs", target, attempt, what, delay)
            await asyncio.sleep(delay)


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


# -- dedup and dispatch ----------------------------------------------------------------------------------
class LRUSet:
    """A set that forgets its oldest members beyond ``maxsize``."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._d: "OrderedDict[Hashable, None]" = OrderedDict()

    def __contains__(self, item: Hashable) -> bool:
        return item in self._d

    def __len__(self) -> int:
        return len(self._d)

    def add(self, item: Hashable) -> None:
        self._d[item] = None
        self._d.move_to_end(item)
        while len(self._d) > self.maxsize:
            self._d.popitem(last=False)

    def discard(self, item: Hashable) -> None:
        self._d.pop(item, None)


class Target(Protocol):
    name: str

    async def send(self, inc: Incident) -> Delivery: ...

    async def refresh(self, inc: Incident) -> None: ...

    def restore(self, inc: Incident) -> None: ...


@dataclass
class _TargetState:
    delivered: LRUSet  # (dedup_key, event_action, incident_id)
    open: LRUSet  # dedup keys whose trigger was delivered and resolve not yet


class MalformedIncident(ValueError):
    def __init__(self, message: str, event_action: str = "unknown"):
        super().__init__(message)
        self.event_action = event_action


def parse_incident(value: Optional[bytes]) -> Incident:
    """A record value -> Incident, or MalformedIncident saying what is wrong."""
    if value is None:
        raise MalformedIncident("empty record value")
    try:
        data = json.loads(value)
    except UnicodeDecodeError:
        raise MalformedIncident("record value is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedIncident(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedIncident(f"expected a JSON object, got {type(data).__name__}")
    action = data.get("event_action")
    action = action if action in ACTIONS else "unknown"
    try:
        inc = Incident.model_validate(data)
    except ValidationError as exc:
        raise MalformedIncident(f"schema: {describe_validation_error(exc)}", action) from None
    for name in ("detected_at", "window_start", "window_end"):  # the targets need real times
        try:
            parse_ts(getattr(inc, name))
        except ValueError as exc:
            raise MalformedIncident(f"schema: {name}: {exc}", action) from None
    return inc


class Pager:
    """Hands each incident to every target, with per-target dedup, outcome metrics and logging."""

    def __init__(self, targets: Iterable[Target], metrics: PagerMetrics, *, lru_size: int = 10000):
        self.targets = list(targets)
        if not self.targets:
            raise ValueError("the pager needs at least one target")
        self.metrics = metrics
        self._state = {t.name: _TargetState(LRUSet(lru_size), LRUSet(lru_size)) for t in self.targets}

    def target(self, name: str) -> Optional[Target]:
        return next((t for t in self.targets if t.name == name), None)

    async def handle_value(self, value: Optional[bytes], where: str = "") -> dict[str, str]:
        """One record from the incidents topic. Never raises for bad input."""
        try:
            inc = parse_incident(value)
        except MalformedIncident as exc:
            log.warning("rejected malformed incident record%s: %s", f" {where}" if where else "", exc)
            for t in self.targets:
                self.metrics.pages.labels(t.name, exc.event_action, "rejected").inc()
            return {t.name: "rejected" for t in self.targets}
        return await self.handle(inc)

    async def handle(self, inc: Incident) -> dict[str, str]:
        outcomes = await asyncio.gather(*(self._deliver(t, inc) for t in self.targets))
        return {t.name: o for t, o in zip(self.targets, outcomes)}

    async def _deliver(self, target: Target, inc: Incident) -> str:
        started = time.monotonic()
        st = self._state[target.name]
        ident = (inc.dedup_key, inc.event_action, inc.incident_id)
        trigger = inc.event_action == "trigger"
        if ident in st.delivered or (trigger and inc.dedup_key in st.open):
            st.delivered.add(ident)
            log.info("%s: duplicate %s %s (incident %s) not paged again", target.name, inc.event_action,
                     inc.dedup_key, inc.incident_id)
            if trigger and inc.dedup_key in st.open:
                try:
                    await target.refresh(inc)
                except Exception:  # noqa: BLE001 - a refresh is best effort
                    log.exception("%s: refreshing %s failed", target.name, inc.dedup_key)
            self.metrics.pages.labels(target.name, inc.event_action, "duplicate").inc()
            return "duplicate"
        try:
            delivery = await target.send(inc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in one target must not stop the pager
            log.exception("%s: delivering %s %s failed", target.name, inc.event_action, inc.dedup_key)
            delivery = Delivery("failed", 0, None, repr(exc))
        if delivery.outcome == "delivered":
            st.delivered.add(ident)
            if trigger:
                st.open.add(inc.dedup_key)
            else:
                st.open.discard(inc.dedup_key)
            log.info("%s: %s %s %s %s (%d attempt(s))", target.name, inc.event_action, inc.severity,
                     inc.kind, inc.dedup_key, delivery.attempts)
        elif not trigger:
            st.open.discard(inc.dedup_key)
        self.metrics.pages.labels(target.name, inc.event_action, delivery.outcome).inc()
        self.metrics.delivery.observe(time.monotonic() - started)
        return delivery.outcome

    def restore_value(self, value: Optional[bytes]) -> None:
        """Warm start: take a record already handled by an earlier pager into the state."""
        try:
            inc = parse_incident(value)
        except MalformedIncident:
            return
        ident = (inc.dedup_key, inc.event_action, inc.incident_id)
        for t in self.targets:
            st = self._state[t.name]
            st.delivered.add(ident)
            if inc.event_action == "trigger":
                st.open.add(inc.dedup_key)
            else:
                st.open.discard(inc.dedup_key)
            t.restore(inc)


# -- options and targets --------------------------------------------------------------------------------
@dataclass
class PagerOptions:
    alertmanager_url: Optional[str] = None
    pagerduty_url: Optional[str] = None
    pagerduty_routing_key: Optional[str] = field(default=None, repr=False)
    segment_labels: tuple[str, ...] = DEFAULT_SEGMENT_LABELS
    resend_interval_s: float = 60.0
    retry: RetryPolicy = RetryPolicy()
    lru_size: int = 10000
    max_open: int = 10000

    @classmethod
    def from_args(cls, args: Any, environ: Optional[dict] = None) -> "PagerOptions":
        env = os.environ if environ is None else environ
        am_url = getattr(args, "alertmanager_url", None) or env.get(ENV_ALERTMANAGER_URL) or None
        pd_url = getattr(args, "pagerduty_url", None) or env.get(ENV_PAGERDUTY_URL) or None
        key = (env.get(ENV_ROUTING_KEY) or "").strip() or None
        if pd_url and not key:
            raise SettingsError(f"a PagerDuty URL is set ({pd_url}) but {ENV_ROUTING_KEY} is not: "
                                f"export the Events API v2 integration key in {ENV_ROUTING_KEY}")
        if not am_url and not key:
            raise SettingsError(
                "no paging target configured: set --alertmanager-url (or SEMWATCH_ALERTMANAGER_URL) "
                f"and/or {ENV_ROUTING_KEY} (PagerDuty Events API v2; URL from --pagerduty-url or "
                f"SEMWATCH_PAGERDUTY_URL, default {PAGERDUTY_DEFAULT_URL})")
        for name, url in (("Alertmanager", am_url), ("PagerDuty", pd_url)):
            if url and not url.startswith(("http://", "https://")):
                raise SettingsError(f"{name} URL must start with http:// or https://, got {url!r}")
        try:
            labels = check_segment_labels((getattr(args, "segment_labels", None) or
                                           ",".join(DEFAULT_SEGMENT_LABELS)).split(","))
            retry = RetryPolicy(
                max_attempts=getattr(args, "max_attempts", None) or RetryPolicy.max_attempts,
                deadline_s=getattr(args, "retry_deadline_s", None) or RetryPolicy.deadline_s,
                timeout_s=getattr(args, "request_timeout_s", None) or RetryPolicy.timeout_s,
                backoff_base_s=_given(getattr(args, "backoff_base_s", None), RetryPolicy.backoff_base_s),
                backoff_max_s=getattr(args, "backoff_max_s", None) or RetryPolicy.backoff_max_s)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        resend = _given(getattr(args, "resend_interval_s", None), 60.0)
        if resend <= 0:
            raise SettingsError("--resend-interval-s must be positive (Alertmanager forgets alerts "
                                "that are not re-sent within its resolve_timeout)")
        return cls(alertmanager_url=am_url, pagerduty_url=(pd_url if key else None), pagerduty_routing_key=key,
                   segment_labels=labels, resend_interval_s=resend, retry=retry,
                   lru_size=getattr(args, "lru_size", None) or 10000,
                   max_open=getattr(args, "max_open", None) or 10000)

    def target_names(self) -> list[str]:
        return ([n for n, on in (("alertmanager", self.alertmanager_url),
                                 ("pagerduty", self.pagerduty_routing_key)) if on])


def _given(value: Optional[float], default: float) -> float:
    return default if value is None else value


def build_targets(opts: PagerOptions, sender: HttpSender) -> list[Target]:
    targets: list[Target] = []
    if opts.alertmanager_url:
        targets.append(AlertmanagerTarget(opts.alertmanager_url, sender, segment_labels=opts.segment_labels,
                                          max_open=opts.max_open))
    if opts.pagerduty_routing_key:
        targets.append(PagerDutyTarget(opts.pagerduty_url, opts.pagerduty_routing_key, sender))
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
    parser.add_argument("--resend-interval-s", type=float, default=60.0,
                        help="re-send open alerts to Alertmanager this often (default 60; keep it well "
                        "below Alertmanager's resolve_timeout)")
    parser.add_argument("--max-attempts", type=int, default=6, help="HTTP attempts per page (default 6)")
    parser.add_argument("--retry-deadline-s", type=float, default=60.0,
                        help="total time per page and target, retries included (default 60)")
    parser.add_argument("--request-timeout-s", type=float, default=10.0, help="one request (default 10)")
    parser.add_argument("--backoff-base-s", type=float, default=0.5, help="first retry delay (default 0.5)")
    parser.add_argument("--backoff-max-s", type=float, default=30.0, help="largest retry delay (default 30)")
    parser.add_argument("--segment-labels", default=",".join(DEFAULT_SEGMENT_LABELS),
                        help="segment keys sent as Alertmanager labels (default %(default)s)")
    parser.add_argument("--lru-size", type=int, default=10000,
                        help="delivered pages remembered for dedup (default 10000)")
    parser.add_argument("--stop-grace-s", type=float, default=10.0,
                        help="on SIGTERM, let an in-flight page finish this long (default 10); an "
                        "unfinished page is not committed and is delivered again after a restart")


def run(args) -> int:
    overrides = {}
    if getattr(args, "broker", None):
        overrides["broker_url"] = args.broker
    settings = load_settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = PagerOptions.from_args(args)
    if not settings.broker_url:
        raise SettingsError("the pager needs a broker: --broker or SEMWATCH_BROKER_URL "
                            "(it reads the incidents topic the workers write)")
    topic = getattr(args, "topic", None) or settings.topics.incidents
    metrics = PagerMetrics(targets=opts.target_names())
    wanted = args.metrics_port if args.metrics_port is not None else DEFAULT_METRICS_PORT
    try:
        port = metrics.serve(wanted)
    except OSError as exc:
        raise SettingsError(f"cannot serve /metrics on port {wanted} ({exc}); choose another with "
                            "--metrics-port (0 = any free port)") from None
    print(f"semwatch: pager metrics at http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    sender = HttpSender(metrics, opts.retry)
    targets = build_targets(opts, sender)
    print("semwatch: paging " + ", ".join(repr(t) for t in targets), file=sys.stderr, flush=True)
    pager = Pager(targets, metrics, lru_size=opts.lru_size)
    try:
        return asyncio.run(_main(settings, pager, opts, topic=topic, group_id=args.group,
                                 offset_reset=args.offset_reset, warm_start=not args.no_warm_start,
                                 stop_grace_s=args.stop_grace_s))
    finally:
        sender.close()


async def _main(settings, pager: Pager, opts: PagerOptions, *, topic: str, group_id: str, offset_reset: str,
                warm_start: bool, stop_grace_s: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(serve(settings, pager, topic=topic, group_id=group_id, offset_reset=offset_reset,
                                     resend_interval_s=opts.resend_interval_s, stop=stop, warm_start=warm_start))
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
