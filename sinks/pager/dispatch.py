"""Dispatch: each incident record to every target, with per-target dedup and outcome metrics.

Idempotent: per target, a bounded LRU of delivered ``(dedup_key, event_action, incident_id)`` and
the set of open dedup keys. A redelivered record, or another trigger for a dedup key that is
already open, counts outcome ``duplicate`` and is not sent to PagerDuty again (Alertmanager gets
the open alert re-sent, which is harmless and refreshes it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Iterable, Optional, Protocol

from semwatch.contract import Incident
from sinks.pager.delivery import Delivery
from sinks.pager.metrics import PagerMetrics
from sinks.pager.records import MalformedIncident, parse_incident

log = logging.getLogger("semwatch.pager")


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
