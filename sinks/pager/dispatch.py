"""Dispatch: every incident record to every target, each target on its own lane.

A :class:`Lane` is one target's FIFO queue and the one task that works it. Targets are
independent: an outage at PagerDuty backs up PagerDuty's lane only, and Alertmanager's pages go
out as they come. Within a lane records are handled in the order they were read, so for each
dedup key a resolve never overtakes its trigger. A page is retried until the target takes it or
refuses it for good (:mod:`sinks.pager.delivery`); it is never given up.

Per target and dedup key the lane keeps a :class:`~sinks.pager.memory.KeyState` (what was
delivered, whether the key is open) and writes it to the ledger (:mod:`sinks.pager.ledger`) after
each delivery; duplicates are counted and not sent (an open Alertmanager alert is refreshed).

A target that pages once per problem (``pages_per_problem``: PagerDuty) gets each record with its
:class:`~sinks.pager.records.Problem`, and a resolve only when no other incident of the problem is
open; otherwise the resolve is kept back (outcome ``grouped``) and only remembered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Optional, Protocol

from semwatch.contract import Incident
from sinks.pager.delivery import Delivery
from sinks.pager.ledger import Ledger, MemoryLedger
from sinks.pager.memory import DeliveredKeys, KeyState
from sinks.pager.metrics import PagerMetrics
from sinks.pager.records import MalformedIncident, Problem, highest, parse_incident, problem_key

log = logging.getLogger("semwatch.pager")


class Target(Protocol):
    name: str

    async def send(self, inc: Incident, problem: Problem) -> Delivery: ...

    async def refresh(self, inc: Incident) -> None: ...

    def restore(self, inc: Incident) -> None: ...


@dataclass
class _Job:
    inc: Optional[Incident]
    taken_at: float  # time.monotonic() when the record was read
    on_done: Callable[[], None] = lambda: None
    call: Optional[Callable[[], Awaitable[object]]] = None  # instead of a page: run this in line


class Lane:
    """One target's queue, worked in order by one task."""

    def __init__(self, target: Target, metrics: PagerMetrics, ledger: Ledger, *, max_closed: int = 10000):
        self.target = target
        self.metrics = metrics
        self.ledger = ledger
        self.keys = DeliveredKeys(max_closed)
        self._undone: deque[_Job] = deque()  # pages read and not yet done, oldest first
        self._queue: Optional[asyncio.Queue[_Job]] = None
        self._task: Optional[asyncio.Task] = None
        self._call_queued = False

    # -- the queue ---------------------------------------------------------------------------
    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._work(), name=f"semwatch-pager-{self.target.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def put(self, job: _Job) -> None:
        self._undone.append(job)
        self._queue.put_nowait(job)

    def call_soon(self, call: Callable[[], Awaitable[object]]) -> None:
        """Run ``call`` in line with the pages (e.g. re-sending open alerts, which must never race
        a resolve); at most one waits at a time."""
        if not self._call_queued and self._queue is not None:
            self._call_queued = True
            self._queue.put_nowait(_Job(None, time.monotonic(), call=call))

    def undelivered(self) -> int:
        return len(self._undone)

    def oldest_age_s(self) -> float:
        return time.monotonic() - self._undone[0].taken_at if self._undone else 0.0

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if job.call is not None:
                self._call_queued = False
                try:
                    await job.call()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a best-effort call must not stop the lane
                    log.exception("%s: %s failed", self.target.name, getattr(job.call, "__name__", "call"))
                continue
            while True:
                try:
                    await self.process(job.inc, job.taken_at)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - e.g. the ledger write: try the page again
                    log.exception("%s: handling %s %s failed; trying again", self.target.name,
                                  job.inc.event_action, job.inc.dedup_key)
                    await asyncio.sleep(1.0)
            self._undone.popleft()
            job.on_done()

    # -- one page ----------------------------------------------------------------------------
    def problem(self, inc: Incident, state: KeyState) -> Problem:
        """The problem ``inc`` is paged under at this target. A target that pages once per
        problem (``pages_per_problem``) gets the group's key, highest open severity and open
        members; any other target a problem of one. A resolve closes the problem its trigger
        opened, whatever group its record names."""
        if not getattr(self.target, "pages_per_problem", False):
            return Problem(inc.dedup_key, inc.severity, (inc.dedup_key,) if inc.event_action == "trigger" else ())
        group = state.group_key if state.open and state.group_key else problem_key(inc)
        members = {k: s.severity or inc.severity for k, s in self.keys.open_members(group).items()}
        members.pop(inc.dedup_key, None)
        if inc.event_action == "trigger":
            members[inc.dedup_key] = inc.severity
        return Problem(group, highest([*members.values(), inc.severity]), tuple(sorted(members)))

    async def process(self, inc: Incident, taken_at: float) -> str:
        """Deliver one record unless it is a duplicate; returns the outcome. Returns only when the
        target took it or refused it (or raises CancelledError)."""
        name, key = self.target.name, inc.dedup_key
        state = self.keys.get(key)
        verdict = state.verdict(inc)
        if verdict != "send":
            log.info("%s: duplicate %s %s (incident %s) not paged again", name, inc.event_action, key,
                     inc.incident_id)
            if verdict == "open":
                try:
                    await self.target.refresh(inc)
                except Exception:  # noqa: BLE001 - a refresh is best effort
                    log.exception("%s: refreshing %s failed", name, key)
            outcome = "duplicate"
        else:
            problem = self.problem(inc, state)
            if inc.event_action == "resolve" and problem.members:
                # Other incidents of the problem are still open: the problem's page stays open.
                log.info("%s: resolve %s kept back: %d more open in problem %s", name, key,
                         len(problem.members), problem.key)
                outcome = "grouped"
            else:
                try:
                    delivery = await self.target.send(inc, problem)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bug in one target must not stop its lane
                    log.exception("%s: delivering %s %s failed", name, inc.event_action, key)
                    delivery = Delivery("rejected", 0, None, repr(exc))
                outcome = delivery.outcome
                if outcome == "delivered":
                    log.info("%s: %s %s %s %s as %s (%d attempt(s), %.1fs after it was read)", name,
                             inc.event_action, problem.severity, inc.kind, key, problem.key, delivery.attempts,
                             time.monotonic() - taken_at)
            # A refused resolve still ends the key: nothing is left open to re-send.
            if outcome != "rejected" or inc.event_action == "resolve":
                new = state.after(inc, group_key=problem.key)
                self.keys.put(key, new)
                await self.ledger.save(name, key, new)
        self.metrics.pages.labels(name, inc.event_action, outcome).inc()
        self.metrics.delivery.observe(time.monotonic() - taken_at)
        return outcome


class Pager:
    """Every record to every target's lane; the pager's memory restored from the ledger."""

    def __init__(self, targets: Iterable[Target], metrics: PagerMetrics, *, ledger: Optional[Ledger] = None,
                 lru_size: int = 10000):
        targets = list(targets)
        if not targets:
            raise ValueError("the pager needs at least one target")
        self.metrics = metrics
        self.ledger = ledger if ledger is not None else MemoryLedger()
        self.lanes = {t.name: Lane(t, metrics, self.ledger, max_closed=lru_size) for t in targets}
        for name, lane in self.lanes.items():
            metrics.watch_backlog(name, lane.undelivered, lane.oldest_age_s)

    def target(self, name: str) -> Optional[Target]:
        lane = self.lanes.get(name)
        return lane.target if lane else None

    # -- memory ------------------------------------------------------------------------------
    async def restore(self) -> int:
        """Read the ledger into each lane's memory and let targets rebuild what they keep (the
        open Alertmanager alerts). Returns the dedup keys known afterwards."""
        for target, key, state in await self.ledger.load():
            lane = self.lanes.get(target)
            if lane is not None:
                lane.keys.put(key, state)
        for lane in self.lanes.values():
            for _key, state in lane.keys.open_keys():
                if state.record is not None:
                    lane.target.restore(Incident.model_validate(state.record))
        return sum(len(lane.keys) for lane in self.lanes.values())

    def restore_value(self, value: Optional[bytes]) -> bool:
        """Take a record an earlier pager handled (read from the incidents topic) as delivered,
        sending nothing. For a pager started without a ledger; see :meth:`save_memory`."""
        try:
            inc = parse_incident(value)
        except MalformedIncident:
            return False
        for lane in self.lanes.values():
            state = lane.keys.get(inc.dedup_key)
            if state.verdict(inc) == "send":
                lane.keys.put(inc.dedup_key, state.after(inc, group_key=lane.problem(inc, state).key))
            lane.target.restore(inc)
        return True

    async def save_memory(self) -> None:
        """Write every lane's memory to the ledger (after :meth:`restore_value`)."""
        for name, lane in self.lanes.items():
            for key, state in lane.keys.items():
                await self.ledger.save(name, key, state)

    # -- records -----------------------------------------------------------------------------
    def start(self) -> None:
        for lane in self.lanes.values():
            lane.start()

    async def stop(self) -> None:
        for lane in self.lanes.values():
            await lane.stop()

    def submit(self, value: Optional[bytes], where: str = "", on_done: Callable[[], None] = lambda: None) -> None:
        """Queue one record from the incidents topic on every lane. ``on_done`` is called once per
        target when that target is done with it. Never raises for bad input."""
        taken_at = time.monotonic()
        try:
            inc = parse_incident(value)
        except MalformedIncident as exc:
            log.warning("rejected malformed incident record%s: %s", f" {where}" if where else "", exc)
            for name in self.lanes:
                self.metrics.pages.labels(name, exc.event_action, "rejected").inc()
                on_done()
            return
        for lane in self.lanes.values():
            lane.put(_Job(inc, taken_at, on_done))

    def undelivered(self) -> int:
        """The longest lane's backlog."""
        return max(lane.undelivered() for lane in self.lanes.values())

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every lane is done with what it was given; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while any(lane.undelivered() for lane in self.lanes.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def handle(self, inc: Incident) -> dict[str, str]:
        """One record through every target at once, outside the lanes (tests, tools)."""
        taken_at = time.monotonic()
        outcomes = await asyncio.gather(*(lane.process(inc, taken_at) for lane in self.lanes.values()))
        return dict(zip(self.lanes, outcomes))

    async def handle_value(self, value: Optional[bytes], where: str = "") -> dict[str, str]:
        """:meth:`handle` for a record value; a malformed one is rejected by every target."""
        try:
            inc = parse_incident(value)
        except MalformedIncident:
            self.submit(value, where)
            return {name: "rejected" for name in self.lanes}
        return await self.handle(inc)
