"""Containment: every trigger with a suspected change names the one to roll back, ranked by how well
its timing, scope and value explain the incident."""

from __future__ import annotations

import random

from detectors.malformed_tool_call import MalformedToolCall
from semwatch.contract import Incident, RunEvent
from semwatch.engine.changes import WARMUP_S, ChangeTracker
from semwatch.engine.tools import ToolMap
from tests.support import replay_one

T = WARMUP_S + 10_000.0
SEGMENT = {"app": "support-bot", "route": "billing", "prompt_version": "v8"}


def _ev(ts, **kw) -> RunEvent:
    base = dict(schema_version="1", event_id=f"e{ts}", run_id=f"r{ts}", ts=ts, app="support-bot",
                route="billing", model="m1", prompt_version="v7", provider="p")
    base.update(kw)
    return RunEvent(**base)


def _tracker(*events: RunEvent) -> ChangeTracker:
    store: dict = {}
    tracker = ChangeTracker(6 * 3600, store.get, store.__setitem__)
    tracker.observe(_ev(0))
    tracker.observe(_ev(0, route="shipping"))
    for e in events:
        tracker.observe(e)
    return tracker


def test_the_change_closest_before_the_spike_in_the_narrowest_scope_with_the_segments_value_wins():
    tracker = _tracker(
        _ev(T - 7200, route="shipping", model="m2"),  # app-wide view: a model change elsewhere, 2 h before
        _ev(T - 180, prompt_version="v8"),  # the route's own prompt rollout, 3 min before
        _ev(T - 60, route="shipping", model="m2", provider="q"),  # another route, 1 min before: wider scope
    )
    c = tracker.containment(SEGMENT, window_start=T, detected_at=T + 120)
    assert (c.field, c.current, c.rollback_to, c.scope) == ("prompt_version", "v8", "v7",
                                                            {"app": "support-bot", "route": "billing"})
    assert c.summary == "roll back prompt_version v8 -> v7 on support-bot/billing (changed 3 min before the spike)"
    assert c.lead_s == 180 and c.alternatives == 2 and 0 < c.rank_score <= 1


def test_a_change_already_rolled_back_is_not_the_target():
    tracker = _tracker(_ev(T - 900, model="m2"), _ev(T - 600, model="m2", prompt_version="v8"),
                       _ev(T + 60, model="m2", prompt_version="v7"))  # rolled back before the detection
    c = tracker.containment({"app": "support-bot", "route": "billing"}, window_start=T, detected_at=T + 120)
    assert (c.field, c.current, c.rollback_to) == ("model", "m2", "m1")


def test_no_change_no_containment():
    assert _tracker().containment(SEGMENT, window_start=T, detected_at=T + 60) is None


def test_the_incident_record_carries_it_and_stays_compatible():
    inc = Incident.model_validate({
        "incident_id": "i", "dedup_key": "d/1", "event_action": "trigger", "severity": "SEV-2",
        "kind": "malformed_tool_call", "detector": "d", "summary": "s", "segment": {"app": "a"},
        "window_start": "2026-01-05T10:00:00Z", "window_end": "2026-01-05T10:05:00Z",
        "detected_at": "2026-01-05T10:05:00Z"})
    assert inc.containment is None and inc.to_dict()["containment"] is None  # optional, default null


def test_a_model_switch_that_breaks_tool_calls_names_the_model_to_roll_back():
    rng = random.Random(3)
    events, t, i = [], 0.0, 0
    switch = 3 * 3600.0
    while t < switch + 1800:
        t += rng.expovariate(0.3)
        model = "gpt-4o-mini" if t < switch else "gemini-2.0-flash"
        broken = t >= switch and rng.random() < 0.25
        args = '{"order_id": "#W1' if broken else {"order_id": f"#W{i}"}
        events.append({"schema_version": "1", "event_id": f"e{i}", "run_id": f"r{i}", "ts": t, "app": "order-agent",
                       "route": "orders", "model": model, "prompt_version": "v3", "conversation_id": f"c{i}",
                       "tool_calls": [{"name": "cancel_order", "call_id": f"k{i}", "arguments": args}]})
        i += 1
    out = replay_one(MalformedToolCall, {}, events, env=None)
    (trigger,) = [inc for inc in out if inc.event_action == "trigger"]
    c = trigger.containment
    assert (c.field, c.current, c.rollback_to, c.scope) == ("model", "gemini-2.0-flash", "gpt-4o-mini",
                                                            {"app": "order-agent", "route": "orders"})
    assert c.summary.startswith("roll back model gemini-2.0-flash -> gpt-4o-mini on order-agent/orders")
    assert [ch.to for ch in trigger.suspected_changes] == ["gemini-2.0-flash"]
    resolves = [inc for inc in out if inc.event_action == "resolve"]
    assert all(r.containment is None for r in resolves)
    assert ToolMap  # the default tool map serves when none is configured
