"""A forged record on the state changelog, with the real embedded broker and real workers: whoever can
write to that topic must not get code run in a worker, nor stop or loop its recovery.

A worker processes some traffic (its state goes to the changelog), forged records are produced
straight onto the changelog (pickles that would run a shell command, a state record of an unknown
tag, junk, and one that replaces the engine clock's record), then the worker is restarted and
recovers its partitions from that changelog. It must come up, count every forged record as refused,
run nothing, and go on detecting.
"""

from __future__ import annotations

import json
import time
import uuid

import msgpack
import pytest

from semwatch.broker import EmbeddedBroker
from semwatch.engine.state_format import MAGIC
from tests.support import WorkerProcess, consume, event_records, produce

pytestmark = pytest.mark.integration

T0 = 1767600000.0  # 2026-01-05T08:00:00Z
REFUSED = "semwatch_state_records_refused_total"


def _event(i: int, run_id: str, **extra) -> dict:
    e = {"schema_version": "1", "event_id": f"ev-{run_id}-{i}", "run_id": run_id, "ts": T0 + i,
         "app": "order-agent", "route": "order-support", "model": "gpt-4o-mini",
         "input_tokens": 800, "output_tokens": 120, "finish_reason": "stop",
         "response_text": "Your order has shipped and should arrive on Friday."}
    e.update(extra)
    return e


def _traffic(first: int, wrong_run: str) -> list[dict]:
    subject = {"user_id": ["u_1"], "order_id": ["#W1"]}
    good = [_event(first + i, f"run-ok-{first + i}", subject=subject) for i in range(20)]
    # Each wrong run on a route of its own: a second wrong run of the same segment would join the
    # first one's open incident (one page per problem) instead of raising its own.
    wrong = _event(first + 30, wrong_run, route=f"refunds-{wrong_run}", subject=subject,
                   finish_reason="tool_calls", tool_calls=[
        {"name": "refund_order", "call_id": "c1", "arguments": {"order_id": "#W9", "amount": 30},
         "side_effect": True}])
    return good + [wrong]


def _pickle_call(module: str, name: str, arg: str) -> bytes:
    def s(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"\x80\x04" + s(module) + s(name) + b"\x93(" + s(arg) + b"tR."


def _forged(marker: str) -> list[bytes]:
    return [
        _pickle_call("semwatch.settings", "os.system", f"touch {marker}"),
        _pickle_call("builtins", "eval", f"__import__('os').system('touch {marker}')"),
        MAGIC + msgpack.packb([msgpack.ExtType(1, b"os.system"), 1, {"cmd": f"touch {marker}"}]),
        b"\x00not a state record at all",
    ]


def _wrong_entity_runs(bootstrap: str, wanted: set[str]) -> set[str]:
    def runs(records) -> set[str]:
        return {r for rec in records for r in json.loads(rec.value)["evidence"].get("run_ids", [])
                if json.loads(rec.value)["kind"] == "wrong_entity_action"}
    return runs(consume(bootstrap, "semwatch.incidents", timeout=120,
                        until=lambda records: wanted <= runs(records)))


def _metric_at_least(worker: WorkerProcess, name: str, value: float, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    seen = -1.0
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker exited; log:\n{worker.log_tail()}"
        seen = worker.metrics().get(name, -1.0)
        if seen >= value:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{name} = {seen}, wanted >= {value}; log:\n{worker.log_tail()}")


def test_forged_changelog_records_are_refused_and_the_restarted_worker_carries_on(tmp_path):
    marker = tmp_path / "pwned"
    app_id = f"semwatch-forged-{uuid.uuid4().hex[:6]}"
    changelog = f"{app_id}-state-changelog"
    started: list[WorkerProcess] = []
    with EmbeddedBroker() as broker:
        try:
            first = WorkerProcess(broker.url, tmp_path / "first.log", app_id=app_id, partitions=2)
            started.append(first.start())
            produce(broker.bootstrap, "semwatch.runs", event_records(_traffic(0, "run-wrong-1")))
            assert "run-wrong-1" in _wrong_entity_runs(broker.bootstrap, {"run-wrong-1"})
            assert len(consume(broker.bootstrap, changelog, timeout=30, idle_s=2)) > 0
            assert first.stop() == 0, first.log_tail()

            from kafka import KafkaProducer

            producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
            forged = 0
            for partition in (0, 1):
                keys = [f"{partition}|__engine__"] + [f"{partition}|forged-{i}" for i in range(3)]
                for key, value in zip(keys, _forged(str(marker)), strict=True):
                    # One record a batch: the embedded broker reports a partition's end as its last
                    # batch's first offset + 1, and recovery reads up to that end.
                    producer.send(changelog, key=json.dumps(key).encode(), value=value,
                                  partition=partition).get(timeout=30)
                    forged += 1
            producer.flush()
            producer.close()

            second = WorkerProcess(broker.url, tmp_path / "second.log", app_id=app_id, partitions=2)
            started.append(second.start())  # ready: its partitions are recovered from the changelog
            assert _metric_at_least(second, REFUSED, forged) == forged
            assert not marker.exists(), "a forged changelog record ran a command"

            produce(broker.bootstrap, "semwatch.runs", event_records(_traffic(100, "run-wrong-2")))
            assert "run-wrong-2" in _wrong_entity_runs(broker.bootstrap, {"run-wrong-2"})
            assert second.metrics()["semwatch_events_processed_total"] >= 21
            assert second.alive() and second.ready_count == 1
            assert "state record refused" in second.log_path.read_text()
            assert second.stop() == 0, second.log_tail()
            assert not marker.exists()
        finally:
            for w in started:
                if w.alive():
                    w.stop(timeout=20)
                w.kill9()
