"""The Faust app's record formats, without a broker: the keyed hop and the state changelog."""

from __future__ import annotations

import asyncio
import json

import pytest
from faust.types import Message
from pydantic import ValidationError

from streams import hop
from semwatch.config import load_config
from semwatch.simulator.generate import generate
from semwatch.contract import RunEvent
from semwatch.settings import Settings
from streams import state_codec
from streams.app import SemwatchApp
from tests.support import REPO


@pytest.fixture(scope="module")
def app() -> SemwatchApp:
    return SemwatchApp(Settings(broker_url="kafka://127.0.0.1:1"), load_config(REPO / "config"))


def test_changelog_records_decode_with_the_state_codec(app):
    # Recovery decodes changelog records through the changelog topic's schema: a state written by
    # the worker must come back as the same object (it used to fail on the pickle bytes as JSON).
    topic = app.table.changelog_topic
    engine = app.config.build_engine()
    state = {"clock": engine.clock, "nested": {"ids": {"a", "b"}}}
    msg = Message(topic.get_topic_name(), 0, 7, 0.0, 0, None, json.dumps("0|k").encode(),
                  state_codec.dumps(state), None)
    event = asyncio.run(topic.decode(msg, propagate=True))
    assert event.key == "0|k"
    assert event.value["nested"] == {"ids": {"a", "b"}}
    assert event.value["clock"].max_ts == engine.clock.max_ts
    tombstone = Message(topic.get_topic_name(), 0, 8, 0.0, 0, None, json.dumps("0|k").encode(), None, None)
    assert asyncio.run(topic.decode(tombstone, propagate=True)).value is None


def test_every_detector_state_survives_the_changelog_codec():
    # Recovery rebuilds the engine from changelog values: run the real detectors over generated
    # traffic with incidents, round-trip every state entry through the codec's restricted
    # unpickler, and check the recovered engine carries on exactly like the one that never stopped.
    config = load_config(REPO / "config")
    events, _ = generate(seed=7, start="2026-01-06T02:00:00Z", duration_s=5 * 3600, rate=2.0)
    events = [RunEvent.model_validate(e) for e in events]
    cut = len(events) // 2
    original = config.build_engine()
    for event in events[:cut]:
        original.process(event)
    recovered_data = {key: state_codec.loads(state_codec.dumps(value))
                      for key, value in original.data.items()}
    assert {type(v).__name__ for v in recovered_data.values()} >= {
        "EngineClock", "RunState", "OutlierState", "RateState", "RefusalSpikeState", "ScopeHistory"}
    recovered = config.build_engine(data=recovered_data)

    def rest(engine):
        out = [i for e in events[cut:] for i in engine.process(e)]
        out += engine.advance_to(events[-1].ts + 7200)
        return [i.model_dump(mode="json") for i in out]

    expected = rest(original)
    assert expected, "the window should hold incidents, or the comparison proves little"
    assert rest(recovered) == expected


def test_state_codec_refuses_globals_outside_plain_data():
    import os
    import pickle
    with pytest.raises(pickle.UnpicklingError, match="refuses posix.system"):
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
