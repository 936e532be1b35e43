"""The streaming backbone end to end, with real parts: the embedded broker (Tansu) and a real
``semwatch worker`` process. Valid events produce an incident on the incidents topic; malformed
records land on the dead-letter topic with a reason; /metrics counts both."""

from __future__ import annotations

import json
import uuid

import pytest

from semwatch.broker import EmbeddedBroker
from tests.support import WorkerProcess, consume, produce

pytestmark = pytest.mark.integration

T0 = 1767600000.0  # 2026-01-05T08:00:00Z


def _event(i: int, run_id: str, **extra) -> dict:
    base = {
        "schema_version": "1", "event_id": f"ev-{run_id}-{i}", "run_id": run_id, "ts": T0 + i,
        "app": "order-agent", "route": "order-support", "model": "gpt-4o-mini",
        "input_tokens": 800, "output_tokens": 120, "finish_reason": "stop",
        "response_text": "Your order has shipped and should arrive on Friday.",
    }
    base.update(extra)
    return base


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="module")
def worker(broker, tmp_path_factory):
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    w = WorkerProcess(broker.url, log, app_id=f"semwatch-it-{uuid.uuid4().hex[:6]}", partitions=2)
    w.start()
    yield w
    code = w.stop()
    assert code == 0, f"worker exited with {code}; log:\n{w.log_tail()}"


def test_valid_and_malformed_records_end_to_end(broker, worker):
    subject = {"user_id": ["u_1"], "order_id": ["#W1"]}
    good = [_event(i, f"run-ok-{i}", subject=subject) for i in range(20)]
    wrong = _event(30, "run-wrong", subject=subject, finish_reason="tool_calls", tool_calls=[
        {"name": "refund_order", "call_id": "c1", "arguments": {"order_id": "#W9", "amount": 30},
         "side_effect": True}])
    records = [(e["run_id"].encode(), json.dumps(e).encode()) for e in good + [wrong]]
    malformed = [
        (b"bad-1", b"\xff\xfe not utf-8"),                                       # undecodable
        (b"bad-2", b"{\"schema_version\": \"1\", "),                              # invalid_json
        (b"bad-3", json.dumps(_event(40, "r", input_tokens=-5)).encode()),       # schema
        (b"bad-4", json.dumps({k: v for k, v in _event(41, "r").items() if k != "model"}).encode()),
        (b"bad-5", b"{\"pad\": \"" + b"x" * (1024 * 1024 + 10) + b"\"}"),          # oversized
    ]
    produce(broker.bootstrap, "semwatch.runs", records + malformed)

    incidents = consume(broker.bootstrap, "semwatch.incidents", timeout=90,
                        until=lambda recs: any(json.loads(r.value)["kind"] == "wrong_entity_action"
                                               for r in recs))
    triggers = [json.loads(r.value) for r in incidents]
    wrong_entity = [i for i in triggers if i["kind"] == "wrong_entity_action"
                    and i["detector"] == "wrong-entity-action"]
    assert len(wrong_entity) == 1, f"incidents: {triggers}\n{worker.log_tail()}"
    inc = wrong_entity[0]
    assert inc["event_action"] == "trigger"
    assert inc["severity"] == "SEV-1"  # refund_order moves money
    assert inc["segment"] == {"app": "order-agent", "route": "order-support"}
    assert "run-wrong" in inc["evidence"]["run_ids"]
    assert "#W9" not in json.dumps(inc)  # entity ids are hashed in evidence
    key_of = {r.value: r.key for r in incidents}
    assert key_of[[r.value for r in incidents if json.loads(r.value) == inc][0]] == inc["dedup_key"].encode()

    dlq = consume(broker.bootstrap, "semwatch.runs.dlq", timeout=60, until=lambda recs: len(recs) >= 5)
    reasons = {r.key: dict(r.headers)["semwatch.reason"].decode() for r in dlq}
    assert reasons == {b"bad-1": "undecodable", b"bad-2": "invalid_json", b"bad-3": "schema",
                       b"bad-4": "schema", b"bad-5": "oversized"}
    details = {r.key: dict(r.headers)["semwatch.error"].decode() for r in dlq}
    assert "input_tokens" in details[b"bad-3"] and "model" in details[b"bad-4"]
    originals = dict(malformed)
    for r in dlq:  # the original bytes, untouched
        assert r.value == originals[r.key]

    m = worker.metrics()
    assert m["semwatch_events_received_total"] == len(records) + len(malformed)
    assert m["semwatch_events_valid_total"] == len(records)
    assert m['semwatch_events_dead_lettered_total{reason="schema"}'] == 2
    assert m['semwatch_events_dead_lettered_total{reason="oversized"}'] == 1
    assert m['semwatch_events_dead_lettered_total{reason="undecodable"}'] == 1
    assert m['semwatch_events_dead_lettered_total{reason="invalid_json"}'] == 1
    assert m['semwatch_incidents_total{detector="wrong-entity-action",event_action="trigger",'
             'kind="wrong_entity_action",severity="SEV-1"}'] == 1
    assert m['semwatch_incidents_open{detector="wrong-entity-action",kind="wrong_entity_action",'
             'severity="SEV-1"}'] == 1
    assert m["semwatch_last_event_timestamp_seconds"] == pytest.approx(T0 + 30)
    assert m["semwatch_worker_ready"] == 1
    assert worker.alive()
