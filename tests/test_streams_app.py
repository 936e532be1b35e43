"""The Faust app's record formats, without a broker: the keyed hop and the state changelog."""

from __future__ import annotations

import asyncio
import json

import pytest
from faust.types import Message
from pydantic import ValidationError

from semwatch.config import load_config
from semwatch.settings import Settings
from streams import hop, state_codec
from streams.app import PartitionState, SemwatchApp
from tests.support import REPO, engine_halfway


@pytest.fixture(scope="module")
def app() -> SemwatchApp:
    return SemwatchApp(Settings(broker_url="kafka://127.0.0.1:1"), load_config(REPO / "config"))


def test_changelog_records_decode_with_the_state_codec(app):
    # Recovery decodes changelog records through the changelog topic's schema: a state written by
    # the worker must come back as the same object (it used to fail on the pickle bytes as JSON).
    topic = app.table.changelog_topic
    engine = app.config.build_engine()
    clock = engine.clock_of("support-bot")
    clock.max_ts = 1767600000.5
    msg = Message(topic.get_topic_name(), 0, 7, 0.0, 0, None, json.dumps("0|k").encode(),
                  state_codec.dumps(clock), None)
    event = asyncio.run(topic.decode(msg, propagate=True))
    assert event.key == "0|k"
    assert event.value == clock
    tombstone = Message(topic.get_topic_name(), 0, 8, 0.0, 0, None, json.dumps("0|k").encode(), None, None)
    assert asyncio.run(topic.decode(tombstone, propagate=True)).value is None


def test_a_refused_changelog_record_decodes_as_no_state_and_is_counted(app):
    # Recovery must go on past a record the codec refuses: it decodes to None, which the worker's
    # state mapping treats as absent, and the worker's gauge timer exports the count.
    topic = app.table.changelog_topic
    before = state_codec.refused_total()
    msg = Message(topic.get_topic_name(), 0, 9, 0.0, 0, None, json.dumps("0|k").encode(),
                  b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.", None)
    assert asyncio.run(topic.decode(msg, propagate=True)).value is None
    assert state_codec.refused_total() == before + 1
    asyncio.run(app._update_gauges())
    # The process's count so far (other tests' refusals included), once.
    assert app.metrics.registry.get_sample_value("semwatch_state_records_refused_total") == before + 1
    asyncio.run(app._update_gauges())
    assert app.metrics.registry.get_sample_value("semwatch_state_records_refused_total") == before + 1


def test_a_key_with_a_refused_record_has_no_state():
    store = {"0|__engine__": None, "0|a|x": "kept", "1|b|y": "other partition"}
    part = PartitionState(store, 0)
    assert list(part) == ["a|x"] and len(part) == 1
    assert part.get("__engine__") is None and part.get("__engine__", 5) == 5
    with pytest.raises(KeyError):
        part["__engine__"]  # noqa: B018
    assert part.pop("__engine__", None) is None  # an engine's delete of it writes no tombstone


def test_every_detector_state_survives_the_changelog_codec():
    # Recovery rebuilds the engine from changelog values: run the real detectors over generated
    # traffic with incidents, round-trip every state entry through the codec, and check the
    # recovered engine carries on exactly like the one that never stopped.
    config, original, events = engine_halfway()
    recovered_data = {key: state_codec.loads(state_codec.dumps(value))
                      for key, value in original.data.items()}
    assert {type(v).__name__ for v in recovered_data.values()} >= {
        "AppClock", "RunState", "OutlierState", "RateState", "RefusalSpikeState", "ScopeHistory"}
    recovered = config.build_engine(data=recovered_data)

    def rest(engine):
        out = [i for e in events for i in engine.process(e)]
        out += engine.advance_to(events[-1].ts + 7200)
        return [i.model_dump(mode="json") for i in out]

    expected = rest(original)
    assert expected, "the window should hold incidents, or the comparison proves little"
    assert rest(recovered) == expected


def test_state_codec_refuses_globals_outside_the_state_classes():
    import os
    import pickle
    with pytest.raises(state_codec.StateDecodeError, match="refuses posix.system"):
        state_codec.loads(pickle.dumps(os.system))


def _event(i: int, **extra) -> bytes:
    body = {"schema_version": "1", "event_id": f"e{i}", "run_id": f"r{i}", "ts": 1767600000 + i,
            "app": "a", "route": "r", "model": "m"}
    body.update(extra)
    return json.dumps(body, indent=1 if i % 2 else None).encode()  # pretty-printed ones too


def test_hop_packs_in_order_within_the_size_limit_and_unpacks_the_same_events():
    values = [_event(i, response_text="x" * (i * 37)) for i in range(200)]
    records = list(hop.pack(values, max_bytes=4096))
    assert sum(n for _, n in records) == len(values)
    assert len(records) > 1
    assert all(len(r) <= 4096 for r, n in records if n > 1)  # only a lone big event may exceed it
    got = [e for r, _ in records for e in hop.unpack(r)]
    assert [e.event_id for e in got] == [f"e{i}" for i in range(200)]
    assert got[5].response_text == "x" * 185


def test_hop_refuses_broken_records():
    with pytest.raises(ValidationError):
        hop.unpack(_event(3))  # a bare event is not a packed record
    with pytest.raises(ValidationError):
        hop.unpack(b"[" + _event(1) + b",{}]")
    with pytest.raises(ValidationError):
        hop.unpack(b"not json")


def test_the_worker_consumer_uses_the_configured_fetch_wait():
    # Faust hard-codes a 1.5 s fetch wait; a broker that does not answer a waiting fetch early
    # (the embedded Tansu) then adds up to that much latency per hop.
    semwatch = SemwatchApp(Settings(broker_url="kafka://127.0.0.1:1", fetch_max_wait_s=0.05),
                           load_config(REPO / "config"))

    async def build():
        consumer = semwatch.app.consumer._thread._create_worker_consumer(semwatch.app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(build()) == 50


class _Steps:
    """Records the steps of one detect batch, in order; ``fail`` names the step that raises."""

    def __init__(self, fail: str = ""):
        self.calls: list[str] = []
        self.fail = fail

    def step(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise ConnectionError(f"broker gone during {name}")

    def add(self, incident) -> None:
        self.step(f"send {incident.event_action}")

    async def flush(self) -> None:
        self.step("incidents acked")

    async def write_changelog(self, partition, engine) -> None:
        self.step("changelog acked")

    def ack(self) -> None:
        self.step("offset ack")


def _wrong_entity_batch(run: str) -> list:
    from semwatch.contract import RunEvent

    base = {"schema_version": "1", "run_id": run, "app": run, "route": "refunds", "model": "m"}
    return [RunEvent.model_validate({**base, "event_id": f"{run}-0", "ts": 1767600000.0,
                                     "subject": {"order_id": ["#W1"]}}),
            RunEvent.model_validate({**base, "event_id": f"{run}-1", "ts": 1767600001.0, "tool_calls": [
                {"name": "refund_order", "arguments": {"order_id": "#W2", "amount": 5.0}}]})]


@pytest.mark.parametrize("fail", ["", "incidents acked", "changelog acked"])
def test_a_batch_sends_its_incidents_then_writes_its_state_then_acks_its_offsets(app, monkeypatch, fail):
    # The order docs/guarantees.md relies on: a crash between two steps replays the batch onto a
    # state that does not yet hold it (the same incidents again, same ids), never the other way round.
    steps = _Steps(fail)
    monkeypatch.setattr(app, "sinks", [steps])
    monkeypatch.setattr(app, "_write_changelog", steps.write_changelog)
    batch = [(event, steps) for event in _wrong_entity_batch(f"order-{fail or 'ok'}")]
    if fail:
        with pytest.raises(ConnectionError):
            asyncio.run(app._process(3, batch))
    else:
        asyncio.run(app._process(3, batch))
    order = ["send trigger", "incidents acked", "changelog acked", "offset ack", "offset ack"]
    assert steps.calls == order[:order.index(fail) + 1 if fail else len(order)]


def test_a_rebalance_keeps_the_state_of_partitions_assigned_again(app):
    # Every rebalance revokes the whole assignment first; Faust then recovers a partition assigned
    # again only from where its table already is. Its state must still be there then.
    from faust.types import TP

    keyed = app.keyed_topic.get_topic_name()
    app.table.data.update({"0|__engine__|a": "kept", "1|__engine__|b": "moved away"})
    app.engine_for(0)
    asyncio.run(app._on_revoked(app.app, {TP(keyed, 0), TP(keyed, 1)}))
    assert 0 not in app.engines  # rebuilt from the recovered table when next needed
    asyncio.run(app._on_assigned(app.app, {TP(keyed, 0), TP("semwatch.runs", 1)}))
    assert app.table.data.get("0|__engine__|a") == "kept"
    assert "1|__engine__|b" not in app.table.data  # recovered from its changelog's start if it comes back
