"""bench/real_background.py builds well-formed, deterministic events from the real Mooncake trace,
and its injections really change the data. Detection figures are the bench's job, not this test's."""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT.parent / "shared" / "data" / "traces" / "mooncake_conversation.jsonl"


def _load_bench():
    spec = importlib.util.spec_from_file_location("real_background", ROOT / "bench" / "real_background.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


rb = _load_bench()
START = 1767614400.0  # 2026-01-05T12:00:00Z: daytime, full load
HOURS = 2
PLAN = [
    rb.Injection("long_output", 600, 900, "chat", share=0.25, factor=8.0),
    rb.Injection("storm", 2400, 600, "docs-qa", factor=4.0),
    rb.Injection("cost", 3600, 1200, "translate", model="o1"),
    rb.Injection("rollout", 3000, 0, "docs-qa"),
    rb.Injection("refusal", 4200, 2400, "chat", share=0.4),
]


@pytest.fixture(scope="module")
def trace():
    if not TRACE.exists():
        pytest.skip(f"Mooncake trace not found at {TRACE} (the shared data folder is absent)")
    return rb.load_trace(TRACE)


@pytest.fixture(scope="module")
def scenario(trace):
    return rb.build(trace, START, HOURS * 3600.0, seed=3, plan=PLAN)


def _in(sc, a, b, route=None):
    return [e for e in sc.events if sc.start + a <= e["ts"] < sc.start + b
            and (route is None or e["route"] == route)]


def _run_event_model():
    for name in ("semwatch.contract", "semwatch.models"):  # optional: the package is being moved
        try:
            return importlib.import_module(name).RunEvent
        except (ImportError, AttributeError):
            continue
    return None


def test_events_are_well_formed(scenario):
    events = scenario.events
    assert len(events) > 10000  # ~200 requests/min at daytime load
    assert len({e["event_id"] for e in events}) == len(events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert scenario.start <= events[0]["ts"] and events[-1]["ts"] < scenario.end
    for e in events:
        assert e["schema_version"] == "1" and e["app"] == rb.APP and e["run_id"]
        assert e["route"] in rb.ROUTES and e["model"] and e["provider"] and e["prompt_version"]
        assert isinstance(e["input_tokens"], int) and e["input_tokens"] >= 0
        assert isinstance(e["output_tokens"], int) and 0 <= e["output_tokens"] <= rb.MAX_TOKENS
        assert e["finish_reason"] == ("length" if e["output_tokens"] >= rb.MAX_TOKENS else "stop")
        assert isinstance(e["refusal"], bool) and "cost_usd" not in e
    model = _run_event_model()
    if model is not None:
        for e in events[:: max(1, len(events) // 2000)]:
            model.model_validate(e)
    # Quiet routes are quiet, the busy one busy (requests/min over two daytime hours).
    per_min = {r: sum(1 for e in events if e["route"] == r) / (HOURS * 60) for r in rb.ROUTES}
    assert per_min["chat"] > 100 and 20 < per_min["docs-qa"] < 80
    assert 0.2 < per_min["code-review"] < 3 and 1 < per_min["translate"] < 8
    base = [e for e in events if e["prompt_version"] == "chat-v7"]
    assert 0.005 < sum(e["refusal"] for e in base) / len(base) < 0.05


def test_deterministic_for_a_seed(trace, scenario):
    again = rb.build(trace, START, HOURS * 3600.0, seed=3, plan=PLAN)
    assert again.events == scenario.events and again.labels == scenario.labels
    other = rb.build(trace, START, HOURS * 3600.0, seed=4, plan=PLAN)
    assert other.events != scenario.events


def test_labels_lie_inside_the_events(scenario):
    assert len(scenario.labels) == 4  # the rollout is benign: no label
    first, last = scenario.events[0]["ts"], scenario.events[-1]["ts"]
    for lab in scenario.labels:
        a, b = rb.parse_time(lab["start"]), rb.parse_time(lab["end"])
        assert first <= a < b <= last
        assert lab["kind"] in ("token_spike", "cost_spike", "false_refusal_spike")
        assert lab["segment"]["app"] == rb.APP


def test_long_outputs_are_longer(scenario):
    inside = _in(scenario, 600, 1500, "chat")
    before = _in(scenario, 0, 600, "chat")
    assert statistics.mean(e["output_tokens"] for e in inside) > 1.5 * statistics.mean(
        e["output_tokens"] for e in before)
    def share(es):
        return sum(e["finish_reason"] == "length" for e in es) / len(es)

    assert share(inside) > 0.1 and share(before) < 0.02


def test_storm_multiplies_requests(scenario):
    inside = _in(scenario, 2400, 3000, "docs-qa")
    before = _in(scenario, 1800, 2400, "docs-qa")
    assert len(inside) > 2.5 * len(before)


def test_cost_window_switches_model_only(scenario):
    inside = _in(scenario, 3600, 4800, "translate")
    before = _in(scenario, 2400, 3600, "translate")
    assert inside and {e["model"] for e in inside} == {"o1"} and {e["model"] for e in before} == {rb.BASE_MODEL}
    assert {e["prompt_version"] for e in inside} == {e["prompt_version"] for e in before}
    lab = next(lab for lab in scenario.labels if lab["kind"] == "cost_spike")
    assert lab["segment"] == {"app": rb.APP, "route": "translate", "model": "o1"}


def test_refusal_window_is_a_new_version_that_refuses(scenario):
    lab = next(lab for lab in scenario.labels if lab["kind"] == "false_refusal_spike")
    version = lab["segment"]["prompt_version"]
    inside = _in(scenario, 4200, 6600, "chat")
    assert {e["prompt_version"] for e in inside} == {version} != {"chat-v7"}
    assert sum(e["refusal"] for e in inside) / len(inside) > 0.3
    after = _in(scenario, 6600, 7200, "chat")
    assert {e["prompt_version"] for e in after} == {"chat-v7"}  # rolled back
    # The benign rollout moved docs-qa on for good.
    assert {e["prompt_version"] for e in _in(scenario, 3000, 7200, "docs-qa")} == {"docs-qa-v4"}


def test_default_plan_spreads_incidents():
    plan = rb.default_plan(2.0, seed=1)
    labelled = [i for i in plan if i.kind]
    for what in ("long_output", "storm", "cost", "refusal"):
        assert sum(i.what == what for i in labelled) >= 2
    assert any(i.what == "storm" and i.start < 3600 for i in labelled)  # cold start
    spans = sorted((i.start, i.start + i.duration + rb.GRACE_S) for i in labelled)
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))  # windows and grace never overlap
    assert plan == rb.default_plan(2.0, seed=1) != rb.default_plan(2.0, seed=2)
    assert rb.default_plan(1.0, seed=1) == [i for i in plan if i.start < 86400]
