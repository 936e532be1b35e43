"""The worker emits the same incidents as offline replay on the same input (issue: detectors)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from semwatch.broker import EmbeddedBroker
from semwatch.config import load_config
from semwatch.contract import RunEvent
from semwatch.simulator.generate import generate
from tests.support import REPO, WorkerProcess, consume, event_records, produce

pytestmark = pytest.mark.integration

START = 1767571200.0  # 2026-01-05T00:00:00Z, a Monday


def test_worker_incidents_equal_replay(tmp_path):
    events, labels = generate(11, START, 9 * 3600)
    events = list(events)
    assert labels, "the generator scripted no incident in this window"

    engine = load_config(REPO / "config").build_engine()
    expected = []
    for e in events:
        expected.extend(engine.process(RunEvent.model_validate(e)))
    expected_json = [json.loads(i.to_json()) for i in expected]
    assert any(i["event_action"] == "trigger" for i in expected_json)

    with EmbeddedBroker() as broker:
        # One partition end to end: the worker sees the events in file order, as replay does.
        worker = WorkerProcess(broker.url, tmp_path / "worker.log",
                               app_id=f"semwatch-eq-{uuid.uuid4().hex[:6]}", partitions=1)
        worker.start()
        try:
            produce(broker.bootstrap, "semwatch.runs", event_records(events))
            deadline = time.monotonic() + 400
            while worker.metrics()["semwatch_events_processed_total"] < len(events):
                assert time.monotonic() < deadline, worker.log_tail()
                assert worker.alive(), worker.log_tail()
                time.sleep(1)
            records = consume(broker.bootstrap, "semwatch.incidents", timeout=60,
                              until=lambda recs: len(recs) >= len(expected_json), idle_s=5)
            got = [json.loads(r.value) for r in records]
        finally:
            worker.stop()
    brief = lambda incs: [(i["detected_at"], i["event_action"], i["detector"], i["dedup_key"]) for i in incs]
    # Incidents of different dedup_keys may sit in different partitions: compare in event-time order.
    order = lambda incs: sorted(incs, key=lambda i: (i["detected_at"], i["dedup_key"], i["event_action"]))
    assert brief(order(got)) == brief(order(expected_json))
    assert order(got) == order(expected_json)
