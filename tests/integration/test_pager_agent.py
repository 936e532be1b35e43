"""The pager's promises with every part real: the embedded broker, ``semwatch page`` as a process,
and two local HTTP servers standing in for Alertmanager and PagerDuty (the real Alertmanager is in
test_pager_alertmanager.py and test_paging_e2e.py; here what matters is when a target answers).

1. PagerDuty is down (503) for a long time while Alertmanager is up: every trigger and resolve
   reaches both, in order per dedup key, and Alertmanager gets them while PagerDuty is still down.
   Times are scaled: a 10-minute outage against a pager whose old retry budget was 60 s (6
   attempts) becomes 15 s against a budget of about 3 s (6 attempts at --backoff-max-s 1).
2. A pager restarted with a group that has no offsets (``--group`` new, ``--offset-reset
   earliest``: what expired or deleted offsets look like) reads the whole topic again and pages
   nothing again.
3. Three incidents of one problem (one ``group_key``) are one PagerDuty incident: triggers with
   the problem's dedup_key, one resolve after the last member resolves, and a restart in the
   middle pages nothing again.
4. The ledger, written in batches, loads back every record of its last batch.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # tests/ has no __init__.py: its helpers are top-level modules
    sys.path.insert(0, str(TESTS))

from support import AM_PATH, PD_PATH, PagerProcess, Receiver, produce, scrape  # noqa: E402

from semwatch.broker import EmbeddedBroker  # noqa: E402
from semwatch.contract import format_ts  # noqa: E402
from sinks.pager.ledger import KafkaLedger  # noqa: E402
from sinks.pager.memory import KeyState  # noqa: E402

pytestmark = pytest.mark.integration

TOPIC = "semwatch.incidents"
OUTAGE_S = 15.0
ROUTING_KEY = "outage-test-routing-key"
# Fast enough to notice the recovery within a second; the same flags exist in the old pager.
FLAGS = ("--backoff-base-s", "0.2", "--backoff-max-s", "1", "--resend-interval-s", "30", "--stop-grace-s", "5")


def incident(key: str, action: str, at: float, group_key: str | None = None, severity: str = "SEV-2") -> dict:
    record = {
        "incident_id": f"{key}:{action}:{at:.0f}", "dedup_key": key, "event_action": action,
        "severity": severity, "kind": "cost_spike", "detector": "cost-per-app", "summary": f"{key} {action}",
        "segment": {"app": key.split("/")[-1]}, "window_start": format_ts(at - 300),
        "window_end": format_ts(at), "detected_at": format_ts(at),
        "evidence": {"run_ids": ["r1"], "event_ids": ["e1"]},
    }
    if group_key is not None:
        record.update(group_key=group_key, related=[])
    return record


def records(incidents: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(i["dedup_key"].encode(), json.dumps(i).encode()) for i in incidents]


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def wait_for(predicate, timeout: float, what: str, diagnostics=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout:.0f}s\n{diagnostics()}")


def handled(pager: PagerProcess, target: str) -> float:
    """Records a pager process is done with at a target (every outcome)."""
    return sum(v for series, v in scrape(pager.metrics_port).items()
               if series.startswith("semwatch_pages_total{") and f'target="{target}"' in series)


@pytest.fixture
def broker(tmp_path):
    b = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    create_topic(b.bootstrap, TOPIC, 2)
    yield b
    b.stop()


@pytest.fixture
def alertmanager():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def pagerduty():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def start_pager(broker, alertmanager, pagerduty, tmp_path):
    started: list[PagerProcess] = []

    def start(group: str, *flags: str) -> PagerProcess:
        p = PagerProcess(broker.url, tmp_path / f"pager-{group}.log", alertmanager_url=alertmanager.url,
                         pagerduty_url=pagerduty.url, routing_key=ROUTING_KEY,
                         args=("--group", group, "--offset-reset", "earliest", *FLAGS, *flags)).start()
        started.append(p)
        wait_for(p.ready.is_set, 90, f"pager (group {group}) in its group", p.log)
        return p

    yield start
    for p in started:
        p.stop()


def test_pagerduty_outage_loses_nothing_and_delays_only_pagerduty(broker, alertmanager, pagerduty, start_pager):
    pager = start_pager("pager-a")
    t0 = time.time() - 3600
    keys = ("cost/app-1", "cost/app-2", "cost/app-3")
    incidents = [incident(k, "trigger", t0 + i) for i, k in enumerate(keys)]
    incidents += [incident(k, "resolve", t0 + 600 + i) for i, k in enumerate(keys)]
    expected = {k: ["trigger", "resolve"] for k in keys}

    pagerduty.down_until[PD_PATH] = time.monotonic() + OUTAGE_S
    produce(broker.bootstrap, TOPIC, records(incidents))

    # Alertmanager has every page while PagerDuty is still down.
    wait_for(lambda: len(alertmanager.sent(AM_PATH)) >= len(incidents), OUTAGE_S - 5,
             "every page at Alertmanager during the PagerDuty outage", pager.log)
    assert time.monotonic() < pagerduty.down_until[PD_PATH]
    assert pagerduty.bodies(PD_PATH) == []
    metrics = scrape(pager.metrics_port)
    assert metrics['semwatch_pager_undelivered_pages{target="pagerduty"}'] == len(incidents)
    assert metrics['semwatch_pager_undelivered_pages{target="alertmanager"}'] == 0

    # PagerDuty recovers and gets every trigger and resolve, once, each trigger before its resolve.
    wait_for(lambda: len(pagerduty.sent(PD_PATH)) >= len(incidents), OUTAGE_S + 60,
             "every page at PagerDuty after the outage", pager.log)
    for target, path in ((alertmanager, AM_PATH), (pagerduty, PD_PATH)):
        got = target.sent(path)
        assert len(got) == len(incidents), got
        assert {k: [a for a, key in got if key == k] for k in keys} == expected, got
    wait_for(lambda: scrape(pager.metrics_port)['semwatch_pager_oldest_undelivered_age_seconds{target="pagerduty"}']
             == 0, 10, "an empty PagerDuty backlog", pager.log)


def test_a_full_backlog_pauses_reading_until_it_drains(broker, alertmanager, pagerduty, start_pager):
    """--max-backlog 2: with two pages waiting for PagerDuty the pager stops reading (so memory
    stays bounded, and Alertmanager waits too); it reads on once PagerDuty takes them."""
    pager = start_pager("pager-a", "--max-backlog", "2")
    t0 = time.time() - 3600
    first = [incident("cost/app-1", "trigger", t0), incident("cost/app-2", "trigger", t0 + 1)]
    later = [incident("cost/app-3", "trigger", t0 + 2), incident("cost/app-1", "resolve", t0 + 600)]
    pagerduty.down_until[PD_PATH] = time.monotonic() + 8.0
    produce(broker.bootstrap, TOPIC, records(first))
    wait_for(lambda: len(alertmanager.sent(AM_PATH)) >= 2, 5, "the first pages at Alertmanager", pager.log)
    produce(broker.bootstrap, TOPIC, records(later))
    time.sleep(3.0)
    assert len(alertmanager.sent(AM_PATH)) == 2, "read on with a full backlog"
    assert "pausing reading" in pager.log()
    wait_for(lambda: len(pagerduty.sent(PD_PATH)) >= 4 and len(alertmanager.sent(AM_PATH)) >= 4, 30,
             "every page once PagerDuty is back", pager.log)
    assert "resuming reading" in pager.log()


def test_a_pager_without_group_offsets_pages_nothing_again(broker, alertmanager, pagerduty, start_pager):
    pager = start_pager("pager-a")
    t0 = time.time() - 3600
    incidents = [incident("cost/app-1", "trigger", t0), incident("cost/app-2", "trigger", t0 + 1),
                 incident("cost/app-1", "resolve", t0 + 600), incident("cost/app-1", "trigger", t0 + 1200),
                 incident("cost/app-1", "resolve", t0 + 1800), incident("cost/app-2", "resolve", t0 + 1801)]
    produce(broker.bootstrap, TOPIC, records(incidents))
    wait_for(lambda: len(pagerduty.sent(PD_PATH)) >= len(incidents) and len(alertmanager.sent(AM_PATH)) >= len(incidents),
             30, "every page at both targets", pager.log)
    time.sleep(1.5)  # the offset commit after the last delivery
    assert pager.stop() == 0, pager.log()

    # A new group (as after its offsets expired or were deleted) reads everything again.
    before = (len(alertmanager.requests), len(pagerduty.requests))
    again = start_pager("pager-b")
    wait_for(lambda: min(handled(again, "pagerduty"), handled(again, "alertmanager")) >= len(incidents),
             60, "the restarted pager through the topic", again.log)
    time.sleep(2.0)
    assert (len(alertmanager.requests), len(pagerduty.requests)) == before, again.log()
    metrics = scrape(again.metrics_port)
    for target in ("alertmanager", "pagerduty"):
        assert sum(v for s, v in metrics.items() if s.startswith("semwatch_pages_total{")
                   and f'target="{target}"' in s and 'outcome="duplicate"' in s) == len(incidents)


def test_one_problem_is_one_pagerduty_incident_across_a_restart(broker, alertmanager, pagerduty, start_pager):
    group = "problem/checkout/1"
    t0 = time.time() - 3600
    members = {"cost/m1": "SEV-3", "tokens/m2": "SEV-1", "refusal/m3": "SEV-2"}

    def member(key: str, action: str, at: float) -> dict:
        return incident(key, action, at, group_key=group, severity=members[key])

    def pd_events() -> list[tuple[str, str]]:
        return pagerduty.sent(PD_PATH)

    pager = start_pager("pager-a")
    produce(broker.bootstrap, TOPIC, records([member("cost/m1", "trigger", t0), member("tokens/m2", "trigger", t0 + 5)]))
    wait_for(lambda: len(pd_events()) >= 2, 30, "the first two triggers at PagerDuty", pager.log)
    time.sleep(1.5)  # the offset commit after the last delivery
    assert pager.stop() == 0, pager.log()

    # Restarted with no group offsets: the two triggers are read again and not paged again.
    again = start_pager("pager-b")
    wait_for(lambda: handled(again, "pagerduty") >= 2, 60, "the restarted pager through the topic", again.log)
    produce(broker.bootstrap, TOPIC, records([member("refusal/m3", "trigger", t0 + 60)]))
    wait_for(lambda: len(pd_events()) >= 3, 30, "the third trigger at PagerDuty", again.log)
    produce(broker.bootstrap, TOPIC, records([member("cost/m1", "resolve", t0 + 600),
                                             member("tokens/m2", "resolve", t0 + 601)]))
    wait_for(lambda: handled(again, "pagerduty") >= 5, 30, "the first two resolves", again.log)
    assert len(pd_events()) == 3, pd_events()  # the problem is still open: m3
    produce(broker.bootstrap, TOPIC, records([member("refusal/m3", "resolve", t0 + 900)]))
    wait_for(lambda: len(pd_events()) >= 4, 30, "the problem's resolve at PagerDuty", again.log)
    time.sleep(1.0)

    assert pd_events() == [("trigger", group)] * 3 + [("resolve", group)]
    bodies = pagerduty.bodies(PD_PATH)
    # The third trigger updates the open incident with the highest open severity: m2's SEV-1,
    # paged before the restart.
    assert bodies[2]["payload"]["severity"] == "critical"
    assert bodies[2]["payload"]["custom_details"]["open_incidents"] == sorted(members)
    # Alertmanager: each incident its own alert, all labelled with the problem. (The restarted
    # pager refreshed the two open alerts when it read their triggers again: the same alerts,
    # which Alertmanager does not notify again.)
    am = alertmanager.sent(AM_PATH)
    assert set(am) == {(action, key) for key in members for action in ("trigger", "resolve")}
    assert sorted(k for a, k in am if a == "resolve") == sorted(members)
    assert {a["labels"]["group_key"] for body in alertmanager.bodies(AM_PATH) for a in body} == {group}


def test_the_ledger_loads_every_record_of_its_last_batch(broker):
    """Saves that land in one produce batch (two lanes finishing one incident together) are all
    loaded back: the embedded broker reports a partition's end as the last batch's first offset
    + 1, and a load that stopped there forgot the batch's other records (found as a flaky
    re-page of a resolve in the test above)."""
    topic = "semwatch.pager.delivered.batch-test"
    kwargs = {"bootstrap_servers": broker.bootstrap}

    async def run() -> list[list[tuple[str, str, bool]]]:
        writer = KafkaLedger(topic, kwargs)
        await writer.start()
        loads = []
        try:
            for rnd in range(12):
                # 1 to 4 saves at once; aiokafka sends what is waiting as one batch.
                n = 1 + rnd % 4
                await asyncio.gather(*(writer.save(f"target-{i}", f"key/{rnd}", KeyState(open=rnd % 2 == 0,
                                                                                        severity="SEV-2"))
                                       for i in range(n)))
                loads.append([(t, k, s.open) for t, k, s in await KafkaLedger(topic, kwargs).load()])
        finally:
            await writer.stop()
        return loads

    loads = asyncio.run(run())
    written: list[tuple[str, str, bool]] = []
    for rnd, loaded in enumerate(loads):
        written += [(f"target-{i}", f"key/{rnd}", rnd % 2 == 0) for i in range(1 + rnd % 4)]
        assert loaded == written, f"after round {rnd}: {len(loaded)} of {len(written)} records loaded"
