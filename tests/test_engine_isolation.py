"""One producer cannot break detection for others: per-app event time, effectively-once events,
probation under floods, a page budget (semwatch/engine/core.py, semwatch/engine/problems.py)."""

from __future__ import annotations

import random

from semwatch.config import load_config
from semwatch.contract import RunEvent, parse_ts
from semwatch.engine.core import CLOCK_PREFIX, Engine, EngineOptions
from tests.support import REPO

T0 = 1_767_600_000.0
HOUR = 3600.0


def chat(app: str, start: float, seconds: float, per_s: float, refused: float, seed: int, *,
         pv: str = "v1", tag: str = "") -> list[dict]:
    rng = random.Random(seed)
    out, t, i = [], start, 0
    while t < start + seconds:
        t += rng.expovariate(per_s)
        out.append({"schema_version": "1", "event_id": f"{app}-{tag}{i}", "run_id": f"{app}-{tag}r{i}",
                    "ts": t, "app": app, "route": "chat", "model": "gpt-4o-mini", "prompt_version": pv,
                    "refusal": rng.random() < refused, "input_tokens": 500, "output_tokens": 200,
                    "conversation_id": f"{app}-c{i}"})
        i += 1
    return out


def engine() -> Engine:
    config = load_config(REPO / "config")
    return config.build_engine()


def run(eng: Engine, events: list[dict]) -> list:
    out = []
    for e in events:
        out.extend(eng.process(RunEvent.model_validate(e)))
    return out


def refusal_spike_of_app_a() -> tuple[list[dict], float]:
    base = chat("a", T0, 3 * HOUR, 1.0, 0.02, seed=1)
    onset = T0 + 3 * HOUR
    spike = chat("a", onset, 20 * 60, 1.0, 0.5, seed=2, pv="v2", tag="s")
    return base + spike, onset


def test_one_event_from_the_future_of_another_app_makes_nothing_of_app_a_late():
    events, onset = refusal_spike_of_app_a()
    clean = run(engine(), sorted(events, key=lambda e: e["ts"]))
    poisoned_eng = engine()
    poison = {**chat("b", T0 + HOUR, 1, 1.0, 0.0, seed=3)[0], "ts": parse_ts("2999-01-01T00:00:00Z")}
    stream = sorted(events, key=lambda e: e["ts"])
    cut = len(stream) // 3
    poisoned = run(poisoned_eng, stream[:cut] + [poison] + stream[cut:])
    assert poisoned_eng.stats.late == 0  # nothing of app A counted late
    key = lambda i: (i.detector, i.event_action, i.detected_at, i.dedup_key)  # noqa: E731
    assert [key(i) for i in poisoned if i.segment.get("app") == "a"] == [key(i) for i in clean]
    assert any(i.event_action == "trigger" and i.kind == "false_refusal_spike" and
               parse_ts(i.detected_at) - onset < 300 for i in poisoned)


def test_redelivered_events_change_no_state_and_raise_nothing_twice():
    events, _ = refusal_spike_of_app_a()
    events.sort(key=lambda e: e["ts"])
    once = engine()
    expected = run(once, events)
    twice = engine()
    out = []
    again = 0
    for start in range(0, len(events), 500):  # each batch, then its last 100 again (a crash)
        batch = events[start:start + 500]
        out += run(twice, batch)
        out += run(twice, batch[-100:])
        again += len(batch[-100:])
    assert twice.stats.duplicates == again
    assert [i.model_dump() for i in out] == [i.model_dump() for i in expected]


def test_a_flood_of_new_apps_never_evicts_an_established_apps_baseline_and_pages_are_budgeted():
    config = load_config(REPO / "config")
    params = [p.model_copy(update={"max_segments": 1000}) for p in config.detector_params]
    eng = config.with_params(params).build_engine()
    legit = sorted(chat("shop", T0, 2 * HOUR, 1.0, 0.02, seed=5), key=lambda e: e["ts"])
    run(eng, legit)
    # What the app has learnt (not the state of single runs, which end anyway):
    baseline_keys = {k for k, st in eng.data.items() if "shop" in k and not k.startswith("__seen__")
                     and "run_id" not in (getattr(st, "segment", None) or {})}
    assert any(k.startswith("false-refusal-spike|") for k in baseline_keys)
    # 5,000 hostile apps, one event each, 6M tokens: each a new segment, a would-be SEV-1 page.
    t = legit[-1]["ts"]
    hostile = [{"schema_version": "1", "event_id": f"h{i}", "run_id": f"h{i}", "ts": t + 1 + i * 0.01,
                "app": f"hostile-{i}", "route": f"r{i}", "model": "m", "input_tokens": 6_000_000,
                "output_tokens": 1, "refusal": False} for i in range(5000)]
    incidents = run(eng, hostile)
    assert baseline_keys <= set(eng.data)  # the established app's state survived
    sizes = eng.segments_active()
    assert all(n <= 1000 for n in sizes.values()), sizes
    triggers = [i for i in incidents if i.event_action == "trigger"]
    budget = EngineOptions().max_new_problems_per_hour
    per_detector = {}
    for i in triggers:
        per_detector[i.detector] = per_detector.get(i.detector, 0) + 1
    assert all(n <= budget + 4 for n in per_detector.values()), per_detector  # + summary updates
    assert any(i.dedup_key.endswith("/suppressed") for i in triggers)
    # ... and the legit app still detects: its refusal spike after the flood is found.
    spike = chat("shop", t + 120, 15 * 60, 1.0, 0.5, seed=6, pv="v2", tag="s")
    after = run(eng, spike)
    assert any(i.kind == "false_refusal_spike" and i.segment.get("app") == "shop" for i in after)


def test_a_quiet_app_still_resolves_by_the_partitions_robust_time():
    events, onset = refusal_spike_of_app_a()
    events = [e for e in events if e["ts"] < onset + 10 * 60]  # app a goes silent mid-spike
    other = chat("other", T0, 6 * HOUR, 0.5, 0.0, seed=7)
    out = run(engine(), sorted(events + other, key=lambda e: e["ts"]))
    spikes = [i for i in out if i.kind == "false_refusal_spike" and i.segment.get("app") == "a"]
    assert [i.event_action for i in spikes] == ["trigger", "resolve"]


def test_app_clocks_are_per_app_state():
    eng = engine()
    run(eng, chat("x", T0, 60, 1.0, 0.0, seed=8) + chat("y", T0 + 600, 60, 1.0, 0.0, seed=9))
    assert {k for k in eng.data if k.startswith(CLOCK_PREFIX)} == {CLOCK_PREFIX + "x", CLOCK_PREFIX + "y"}
    assert eng.watermark_of("x") < eng.watermark_of("y")


def _with_fast_clock(events: list[dict], start: float, seconds: float, ahead_s: float = 1200.0) -> list[dict]:
    """``events`` and app b's, arriving in step with them, but b's producer clock reads ``ahead_s``
    ahead (less than max_clock_lead_s: the partition believes it)."""
    b = chat("b", start, seconds, 0.5, 0.0, seed=4)
    arrivals = [(e["ts"], e) for e in events] + [(e["ts"], {**e, "ts": e["ts"] + ahead_s}) for e in b]
    return [e for _, e in sorted(arrivals, key=lambda x: x[0])]


def test_an_app_whose_clock_runs_20_minutes_ahead_makes_nothing_of_another_app_late():
    # Quiet is time without events, not a clock behind another's: app a sends all along, so its
    # time stays its own (it used to be moved on as if quiet: its events late, its spike missed).
    events, onset = refusal_spike_of_app_a()
    events.sort(key=lambda e: e["ts"])
    clean = run(engine(), events)
    eng = engine()
    out = run(eng, _with_fast_clock(events, onset - 30 * 60, 3600))
    assert eng.stats.late == 0
    key = lambda i: (i.detector, i.event_action, i.detected_at, i.dedup_key)  # noqa: E731
    assert [key(i) for i in out if i.segment.get("app") == "a"] == [key(i) for i in clean]
    assert any(i.event_action == "trigger" for i in clean)


def test_a_quiet_app_behind_a_fast_clock_still_resolves():
    events, onset = refusal_spike_of_app_a()
    events = sorted((e for e in events if e["ts"] < onset + 10 * 60), key=lambda e: e["ts"])
    out = run(engine(), _with_fast_clock(events, onset - 30 * 60, 3 * HOUR))
    spikes = [i for i in out if i.kind == "false_refusal_spike" and i.segment.get("app") == "a"]
    assert [i.event_action for i in spikes] == ["trigger", "resolve"]


def test_a_batch_released_in_event_time_order_makes_no_app_of_it_quiet():
    # A worker releases each batch in event-time order across apps: app b's events (20 minutes
    # ahead) all come after app a's. Within the batch app a is not quiet, so its later events
    # are not late. (Event by event, a backlog of such batches used to move app a on.)
    events, onset = refusal_spike_of_app_a()
    events.sort(key=lambda e: e["ts"])
    clean = run(engine(), events)
    arrivals = _with_fast_clock(events, onset - 30 * 60, 3600)
    eng = engine()
    out = []
    for start in range(0, len(arrivals), 2000):
        batch = sorted(arrivals[start:start + 2000], key=lambda e: e["ts"])
        out += eng.process_batch([RunEvent.model_validate(e) for e in batch])
    assert eng.stats.late == 0
    key = lambda i: (i.detector, i.event_action, i.detected_at, i.dedup_key)  # noqa: E731
    assert [key(i) for i in out if i.segment.get("app") == "a"] == [key(i) for i in clean]
