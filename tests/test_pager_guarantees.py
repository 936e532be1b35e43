"""What the pager promises (sinks/pager/__init__.py), without a broker: its lanes, dedup memory and
ledger against a real local HTTP receiver (tests/test_pager.py's), with deadlines in seconds.

The same promises against the real broker and the real ``semwatch page`` process are in
tests/integration/test_pager_outage.py.
"""

from __future__ import annotations

import asyncio
import time

from support import AM_PATH, PD_PATH, Receiver
from test_pager import FAST, incident, pages

from semwatch.contract import format_ts
from sinks.pager.alertmanager import AlertmanagerTarget
from sinks.pager.delivery import HttpSender
from sinks.pager.dispatch import Pager
from sinks.pager.ledger import MemoryLedger
from sinks.pager.memory import HISTORY
from sinks.pager.metrics import PagerMetrics
from sinks.pager.offsets import OffsetTracker
from sinks.pager.pagerduty import PagerDutyTarget

T0 = 1_767_607_200.0  # 2026-01-05T10:00:00Z


def cycle(key: str, n: int, start: float = T0) -> list:
    """Trigger and resolve of ``key``, ``n`` times, 20 minutes of event time apart."""
    out = []
    for i in range(n):
        at = start + i * 1200
        out.append(incident(dedup_key=key, incident_id=f"{key}-t{i}", detected_at=format_ts(at),
                            window_end=format_ts(at)))
        out.append(incident("resolve", dedup_key=key, incident_id=f"{key}-r{i}", detected_at=format_ts(at + 600),
                            window_end=format_ts(at + 600)))
    return out


def build(receiver: Receiver, metrics: PagerMetrics, ledger: MemoryLedger) -> tuple[Pager, HttpSender]:
    sender = HttpSender(metrics, FAST)
    return Pager([AlertmanagerTarget(receiver.url, sender), PagerDutyTarget(receiver.url, "K", sender)],
                 metrics, ledger=ledger), sender


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.02)


def test_pagerduty_down_delays_only_pagerduty_and_loses_nothing(receiver, metrics):
    """PagerDuty answers 503 for 3 s (a long outage, scaled): every trigger and resolve still
    reaches it, in order per key; Alertmanager has all of them before PagerDuty comes back; offsets
    stay behind the first record PagerDuty lacks."""
    records = [r for key in ("k/a", "k/b", "k/c") for r in cycle(key, 1)]
    records = [records[i] for i in (0, 2, 1, 4, 3, 5)]  # interleaved: ta tb ra tc rb rc

    async def scenario():
        pager, sender = build(receiver, metrics, MemoryLedger())
        tracker = OffsetTracker()
        receiver.down_until[PD_PATH] = time.monotonic() + 3.0
        pager.start()
        try:
            for offset, rec in enumerate(records):
                tracker.take("p0", offset, len(pager.lanes))
                pager.submit(rec.to_json().encode(), on_done=lambda o=offset: tracker.done("p0", o))
            # Done at Alertmanager: the receiver has the sixth page and the lane has its answer (the
            # receiver records a request before the lane reads the response: waiting for the
            # receiver alone saw the lane still at 1 in CI).
            await wait_for(lambda: len(receiver.bodies(AM_PATH)) == 6 and metrics.registry.get_sample_value(
                "semwatch_pager_undelivered_pages", {"target": "alertmanager"}) == 0, 2.0,
                "all pages at Alertmanager")
            assert time.monotonic() < receiver.down_until[PD_PATH], "Alertmanager waited for PagerDuty"
            assert receiver.bodies(PD_PATH) == []
            assert tracker.committable() == {"p0": 0}  # PagerDuty has none of them yet
            assert metrics.registry.get_sample_value(
                "semwatch_pager_undelivered_pages", {"target": "pagerduty"}) == 6
            await asyncio.sleep(0.6)
            assert metrics.registry.get_sample_value(
                "semwatch_pager_oldest_undelivered_age_seconds", {"target": "pagerduty"}) >= 0.6
            assert await pager.drain(15.0)
            assert tracker.committable() == {"p0": 6}
        finally:
            await pager.stop()
            sender.close()

    asyncio.run(scenario())
    expected = [(r.event_action, r.dedup_key) for r in records]
    assert receiver.sent(AM_PATH) == expected
    assert receiver.sent(PD_PATH) == expected  # each trigger before its resolve, nothing lost
    assert pages(metrics, "pagerduty", "resolve", "delivered") == 3
    assert metrics.registry.get_sample_value(
        "semwatch_pager_oldest_undelivered_age_seconds", {"target": "pagerduty"}) == 0


def test_a_restarted_pager_pages_nothing_it_already_paged(receiver, metrics):
    """A new pager on the same ledger, reading the whole history again (a group whose offsets
    expired), sends nothing, and re-sends the alert still open to Alertmanager."""
    history = cycle("k/flapping", 3) + cycle("k/open", 1)[:1]
    ledger = MemoryLedger()

    async def first():
        pager, sender = build(receiver, metrics, ledger)
        try:
            for rec in history:
                assert set((await pager.handle(rec)).values()) == {"delivered"}
        finally:
            sender.close()

    async def again() -> Pager:
        pager, sender = build(receiver, PagerMetrics(), ledger)
        try:
            assert await pager.restore() == 4  # two keys at two targets
            for rec in history:
                assert set((await pager.handle(rec)).values()) == {"duplicate"}
            assert await pager.target("alertmanager").resend_open() == 1
        finally:
            sender.close()
        return pager

    asyncio.run(first())
    pd_before, am_before = len(receiver.bodies(PD_PATH)), len(receiver.bodies(AM_PATH))
    asyncio.run(again())
    assert len(receiver.bodies(PD_PATH)) == pd_before
    # Alertmanager only had its open alert refreshed (the trigger read again) and re-sent: the
    # same alert, which it does not notify again.
    assert receiver.sent(AM_PATH)[am_before:] == [("trigger", "k/open")] * 2


def test_history_older_than_everything_remembered_is_not_paged_again(receiver, metrics):
    """A key that flapped more often than the memory keeps: the oldest cycles are recognised by
    their event time."""
    history = cycle("k/flappy", HISTORY)  # 2 * HISTORY records: only the last HISTORY are remembered
    ledger = MemoryLedger()

    async def scenario():
        pager, sender = build(receiver, metrics, ledger)
        try:
            for rec in history:
                await pager.handle(rec)
            again, sender2 = build(receiver, PagerMetrics(), ledger)
            await again.restore()
            outcomes = [await again.handle(rec) for rec in history]
            sender2.close()
            return outcomes
        finally:
            sender.close()

    outcomes = asyncio.run(scenario())
    assert all(set(o.values()) == {"duplicate"} for o in outcomes)
    assert len(receiver.bodies(PD_PATH)) == 2 * HISTORY


def test_a_refused_resolve_ends_the_key_and_a_refused_trigger_is_not_kept(receiver, metrics):
    receiver.script[AM_PATH] = [(400, "bad", 0.0), (200, "", 0.0), (400, "bad", 0.0)]
    pager, sender = build(receiver, metrics, MemoryLedger())
    am = pager.target("alertmanager")

    async def scenario():
        assert (await pager.handle(incident(dedup_key="k/1")))["alertmanager"] == "rejected"
        assert not am.open  # nothing to re-send
        assert (await pager.handle(incident(dedup_key="k/2")))["alertmanager"] == "delivered"
        assert (await pager.handle(incident("resolve", dedup_key="k/2")))["alertmanager"] == "rejected"
        assert not am.open and not pager.lanes["alertmanager"].keys.get("k/2").open

    try:
        asyncio.run(scenario())
    finally:
        sender.close()
    assert pages(metrics, "alertmanager", "resolve", "rejected") == 1


def test_malformed_records_are_done_at_once_for_every_target(metrics):
    sender = HttpSender(metrics, FAST)
    pager = Pager([PagerDutyTarget("http://127.0.0.1:9", "K", sender)], metrics)
    tracker = OffsetTracker()
    tracker.take("p0", 0, 1)
    pager.submit(b"{not json", on_done=lambda: tracker.done("p0", 0))
    sender.close()
    assert tracker.committable() == {"p0": 1}
    assert pages(metrics, "pagerduty", "unknown", "rejected") == 1
