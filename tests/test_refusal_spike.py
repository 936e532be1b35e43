"""The false-refusal spike detector (detectors/false_refusal_spike.py) on constructed event streams."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from detectors.false_refusal_spike import (
    RefusalSpikeDetector,
    RefusalSpikeParams,
    RefusalSpikeState,
    binom_logsf,
)
from semwatch.contract import RunEvent, parse_ts
from semwatch.engine import state_format
from semwatch.engine.core import Engine, EngineOptions
from semwatch.engine.detector import DetectorEnv

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z
HOUR = 3600.0
ROOT = Path(__file__).resolve().parent.parent


def make_detector(**overrides) -> RefusalSpikeDetector:
    params = RefusalSpikeParams(name="false-refusal-spike", type="false_refusal_spike", **overrides)
    return RefusalSpikeDetector(params, DetectorEnv())


def make_engine(detector=None, data=None) -> Engine:
    return Engine([detector or make_detector()], EngineOptions(), data=data)


def event(i: int, ts: float, *, pv: str = "v12", refusal=False, flagged=None, route: str = "billing",
          text: str | None = None) -> RunEvent:
    raw = {
        "schema_version": "1", "event_id": f"e{i}", "run_id": f"r{i}", "ts": ts,
        "app": "support-bot", "route": route, "model": "gpt-4o-mini", "prompt_version": pv,
        "refusal": refusal,
        "response_text": text if text is not None else
        ("I'm sorry, but I can't help with that." if refusal else "Here is your invoice."),
    }
    if flagged is not None:
        raw["request_flagged"] = flagged
    return RunEvent.model_validate(raw)


def stream(start: float, seconds: float, rate: float, p: float, seed: int, *, pv: str = "v12",
           id0: int = 0, **kw) -> list[RunEvent]:
    """Poisson arrivals at `rate` per second, each refused with probability `p`."""
    rng = random.Random(seed)
    out, t, i = [], start, id0
    while True:
        t += rng.expovariate(rate)
        if t >= start + seconds:
            return out
        out.append(event(i, t, pv=pv, refusal=rng.random() < p, **kw))
        i += 1


def merge(*streams: list[RunEvent]) -> list[RunEvent]:
    return sorted((e for s in streams for e in s), key=lambda e: e.ts)


def run(events, engine=None, tail_s: float = 3600.0):
    engine = engine or make_engine()
    incidents = []
    for e in events:
        incidents.extend(engine.process(e))
    if tail_s:
        incidents.extend(engine.advance_to(events[-1].ts + tail_s))
    return incidents, engine


def triggers(incidents):
    return [i for i in incidents if i.event_action == "trigger"]


def resolves(incidents):
    return [i for i in incidents if i.event_action == "resolve"]


# -- statistics ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n,p", [(1, 0.3), (10, 0.02), (25, 0.5), (40, 0.9), (200, 0.03)])
def test_binomial_tail_matches_brute_force(n, p):
    pmf = [math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(n + 1)]
    for k in range(n + 2):
        expected = sum(pmf[k:])
        got = math.exp(binom_logsf(k, n, p))
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_binomial_tail_is_finite_far_out():
    assert math.isfinite(binom_logsf(5000, 20000, 0.01))
    assert binom_logsf(5000, 20000, 0.01) < -1000


# -- parameters ---------------------------------------------------------------------------------
def test_params_reject_unknown_and_inconsistent_fields():
    with pytest.raises(ValidationError):
        RefusalSpikeParams(name="x", type="false_refusal_spike", min_volum=3)
    with pytest.raises(ValidationError):
        RefusalSpikeParams(name="x", type="false_refusal_spike", clear_increase=0.2, min_increase=0.1)
    with pytest.raises(ValidationError):
        RefusalSpikeParams(name="x", type="false_refusal_spike", window_s=10, bucket_s=15)


def test_config_entry_is_valid():
    data = yaml.safe_load((ROOT / "config" / "semwatch.yaml").read_text())
    entries = [d for d in data["detectors"] or [] if d.get("type") == "false_refusal_spike"]
    assert len(entries) == 1
    params = RefusalSpikeParams.model_validate(entries[0])
    assert "app" in params.group_by


# -- behaviour ----------------------------------------------------------------------------------
def test_flat_day_with_base_rate_refusals_raises_nothing():
    events = stream(T0, 24 * HOUR, 0.4, 0.02, seed=1)
    incidents, engine = run(events)
    assert incidents == []
    assert engine.stats.events == len(events)


def test_spike_triggers_within_two_minutes_once_then_resolves_on_recovery():
    spike_at, spike_len = T0 + 2 * HOUR, 20 * 60.0
    events = merge(
        stream(T0, 2 * HOUR, 1.0, 0.02, seed=2),
        stream(spike_at, spike_len, 1.0, 0.4, seed=3, id0=10**6),
        stream(spike_at + spike_len, 30 * 60.0, 1.0, 0.02, seed=4, id0=2 * 10**6),
    )
    incidents, _ = run(events)
    [trig] = triggers(incidents)
    [res] = resolves(incidents)
    delay = parse_ts(trig.detected_at) - spike_at
    assert 0 < delay <= 120
    assert trig.kind == "false_refusal_spike"
    assert trig.segment == {"app": "support-bot", "route": "billing", "model": "gpt-4o-mini",
                            "prompt_version": "v12"}
    assert trig.observed >= 0.2 and trig.baseline < 0.05
    assert trig.baseline < trig.threshold <= trig.observed
    assert trig.score > 4
    assert "support-bot/billing gpt-4o-mini v12" in trig.summary and "refused" in trig.summary
    assert trig.evidence["event_ids"] and trig.evidence["excerpts"]
    assert parse_ts(trig.window_start) < parse_ts(trig.window_end) <= parse_ts(trig.detected_at)
    assert res.dedup_key == trig.dedup_key and res.severity == trig.severity
    assert res.evidence["resolved_by"] == "recovered"
    assert spike_at + spike_len < parse_ts(res.detected_at) < spike_at + spike_len + 15 * 60
    assert res.incident_id != trig.incident_id


def test_severity_follows_magnitude_and_volume():
    base = stream(T0, HOUR, 2.0, 0.02, seed=5)
    big = stream(T0 + HOUR, 10 * 60.0, 2.0, 0.8, seed=6, id0=10**6)
    [trig] = triggers(run(merge(base, big))[0])
    assert trig.severity == "SEV-1"
    small = stream(T0 + HOUR, 10 * 60.0, 2.0, 0.18, seed=6, id0=10**6)
    [trig] = triggers(run(merge(base, small))[0])
    assert trig.severity == "SEV-3"


def test_new_prompt_version_is_compared_with_the_routes_history_and_resolves_when_idle():
    rollout, rollback = T0 + 3 * HOUR, T0 + 3 * HOUR + 30 * 60
    events = merge(
        stream(T0, 3 * HOUR, 1.0, 0.02, seed=7, pv="v12"),
        stream(rollout, rollback - rollout, 1.0, 0.3, seed=8, pv="v13", id0=10**6),
        stream(rollback, HOUR, 1.0, 0.02, seed=9, pv="v12", id0=2 * 10**6),
    )
    incidents, _ = run(events, tail_s=0)
    [trig] = triggers(incidents)
    assert trig.segment["prompt_version"] == "v13"
    assert parse_ts(trig.detected_at) - rollout <= 120
    assert trig.baseline == pytest.approx(0.02, abs=0.01)  # the route's rate, not the 3% prior
    assert trig.evidence["baseline_from"] == "app+route+model"
    assert any(c.field == "prompt_version" and c.to == "v13" for c in trig.suspected_changes)
    [res] = resolves(incidents)
    assert res.dedup_key == trig.dedup_key and res.severity == trig.severity
    assert res.evidence["resolved_by"] == "idle"
    assert "no traffic" in res.summary
    assert rollback + 300 <= parse_ts(res.detected_at) <= rollback + 300 + 60


def test_benign_rollout_does_not_fire():
    events = merge(
        stream(T0, 3 * HOUR, 1.0, 0.02, seed=10, pv="v12"),
        stream(T0 + 3 * HOUR, 3 * HOUR, 1.0, 0.04, seed=11, pv="v13", id0=10**6),
    )
    assert run(events)[0] == []


def test_the_window_test_needs_volume_the_sequential_test_does_not():
    # v13 refuses everything, but one request every 10 s is 18 per 3-min window: below min_volume.
    v13 = [event(10**6 + i, T0 + 2 * HOUR + 10.0 * i, pv="v13", refusal=True)
           for i in range(1440)]
    events = merge(stream(T0, 6 * HOUR, 1.0, 0.02, seed=12, pv="v12"), v13)
    assert run(events, make_engine(make_detector(min_volume=20, sequential=False)))[0] == []
    # ... while one request every 8 s (22 per window) is enough for the window.
    v13_8 = [event(10**6 + i, T0 + 2 * HOUR + 8.0 * i, pv="v13", refusal=True) for i in range(1800)]
    events_8 = merge(stream(T0, 6 * HOUR, 1.0, 0.02, seed=12, pv="v12"), v13_8)
    assert len(triggers(run(events_8, make_engine(make_detector(min_volume=20, sequential=False)))[0])) == 1
    # The sequential test judges everything since the rise began: the 10 s stream fires too, within
    # a few requests (each refusal against a 2 % baseline is strong evidence).
    [trig] = triggers(run(events, make_engine(make_detector(min_volume=20)))[0])
    assert trig.evidence["test"] == "sequential"
    assert parse_ts(trig.detected_at) <= T0 + 2 * HOUR + 10.0 * 12


def test_refusals_of_flagged_requests_and_unclassified_events_do_not_count():
    base = stream(T0, 2 * HOUR, 1.0, 0.02, seed=14)
    flagged = stream(T0 + 2 * HOUR, 20 * 60.0, 1.0, 0.95, seed=15, id0=10**6, flagged=True)
    unknown = [event(2 * 10**6 + i, T0 + 2 * HOUR + i * 0.7, refusal=None) for i in range(1700)]
    incidents, engine = run(merge(base, flagged, unknown))
    assert incidents == []
    # ... while the same refusals on ordinary requests do fire.
    ordinary = stream(T0 + 2 * HOUR, 20 * 60.0, 1.0, 0.95, seed=15, id0=10**6, flagged=False)
    assert len(triggers(run(merge(base, ordinary))[0])) == 1


def test_new_app_without_history_only_learns():
    # 30 % refusals from the very first request: no baseline exists to call it a spike.
    incidents, _ = run(stream(T0, 20 * 60.0, 1.0, 0.3, seed=16))
    assert incidents == []


def test_late_events_are_counted_not_windowed():
    base = stream(T0, HOUR, 1.0, 0.02, seed=27)
    end = base[-1].ts
    # 300 refusals that arrive after event time has moved 2 minutes past them (engine-late) ...
    late = [event(10**6 + i, end - 120 + i * 0.1, refusal=True) for i in range(300)]
    # ... and 50 for a bucket of this segment that closed already, though within engine lateness.
    detector = make_detector(grace_s=5.0)
    engine = make_engine(detector)
    incidents, _ = run(base, engine, tail_s=0)
    incidents += run(late, engine, tail_s=0)[0]
    newest = event(2 * 10**6, end + 40)
    incidents += engine.process(newest)
    closed = [event(3 * 10**6 + i, end + 40 - 25 + i * 0.01, refusal=True) for i in range(50)]
    incidents += run(closed, engine, tail_s=0)[0]
    incidents += run(stream(end + 41, 10 * 60.0, 1.0, 0.02, seed=18, id0=4 * 10**6), engine)[0]
    assert incidents == []
    [state] = [s for s in engine.data.values() if isinstance(s, RefusalSpikeState)]
    assert state.late == 350
    assert engine.stats.late >= 300


def test_state_records_restore_mid_stream_and_continue_identically():
    rollout = T0 + 2 * HOUR
    events = merge(
        stream(T0, 3 * HOUR, 1.0, 0.02, seed=19, pv="v12"),
        stream(rollout, 20 * 60.0, 1.0, 0.35, seed=20, pv="v13", id0=10**6),
    )
    whole, _ = run(events)
    assert len(triggers(whole)) == 1 and len(resolves(whole)) == 1

    cut = next(i for i, e in enumerate(events) if e.ts > rollout + 60)  # while pending
    first, engine = run(events[:cut], tail_s=0)
    records = {k: state_format.dumps(v) for k, v in engine.data.items()}  # as the changelog has them
    # small detector state (the engine's own bookkeeping, e.g. its dedup memory, aside)
    assert sum(len(v) for k, v in records.items() if not k.startswith("__")) < 20_000
    restored = make_engine(data={k: state_format.loads(v) for k, v in records.items()})
    rest, _ = run(events[cut:], restored)
    assert [i.to_dict() for i in first + rest] == [i.to_dict() for i in whole]


def test_state_stays_bounded():
    events = stream(T0, 2 * HOUR, 5.0, 0.3, seed=21, text="I can't do that, jane@example.com")
    _, engine = run(events, tail_s=0)
    [state] = [s for s in engine.data.values() if isinstance(s, RefusalSpikeState)]
    assert len(state.buckets) <= 180 / 15 + 3
    assert len(state.samples) <= 5
    assert all("@" not in s[2] for s in state.samples)  # excerpts are redacted


def test_contract_examples():
    normal, anomalous = RefusalSpikeDetector._unit_test_anomaly()
    detector = make_detector(**RefusalSpikeDetector._unit_test_params())
    engine = make_engine(detector)
    head = []
    for raw in normal:
        head += engine.process(RunEvent.model_validate(raw))
    assert head == []
    tail = []
    for raw in anomalous:
        tail += engine.process(RunEvent.model_validate(raw))
    assert [i.event_action for i in tail] == ["trigger"]


def test_refusals_of_one_conversation_are_not_a_spike_but_of_several_are():
    base = stream(T0, 4 * HOUR, 1.0, 0.02, seed=21, pv="v12")
    t = T0 + 3 * HOUR

    def retries(conversations: int) -> list[RunEvent]:
        # 12 refused requests in 60 s on a quiet route, from `conversations` users taking turns
        out = []
        for i in range(12):
            e = event(10**6 + i, t + 5 * i, route="faq", refusal=True)
            e.conversation_id = f"conv-{i % conversations}"
            out.append(e)
        return out

    quiet_faq = stream(T0, 4 * HOUR, 0.05, 0.0, seed=22, route="faq", id0=5 * 10**5)
    assert triggers(run(merge(base, quiet_faq, retries(1)))[0]) == []  # one user retrying
    assert triggers(run(merge(base, quiet_faq, retries(2)))[0]) == []  # min_conversations: 3
    [trig] = triggers(run(merge(base, quiet_faq, retries(3)))[0])
    assert trig.segment["route"] == "faq"


@pytest.mark.parametrize("sequential", [False, True])
def test_quiet_segment_triggers_for_s_after_the_evidence_not_when_the_watermark_comes_by(sequential):
    """Five refusals from five users in 20 s on a route that gets 3 requests a minute, then
    silence there: the breach is judged at the refusals themselves and held for for_s (30 s) of
    event time, which the busy route's events carry. (Judged only at bucket ends, as before, this
    burst went unreported: the route's next request came after it had left the window.) With the
    sequential test, accumulated evidence is its own sustain: it triggers at the evidence."""
    base = stream(T0, 4 * HOUR, 1.0, 0.02, seed=21, pv="v12")
    t = T0 + 3 * HOUR  # a bucket boundary
    burst = []
    for i in range(5):
        e = event(10**6 + i, t + 1 + 5 * i, route="faq", refusal=True)
        e.conversation_id = f"conv-{i}"
        burst.append(e)
    quiet_faq = [e for e in stream(T0, 4 * HOUR, 0.05, 0.0, seed=22, route="faq", id0=5 * 10**5)
                 if not t - 10 <= e.ts < t + 180]
    [trig] = triggers(run(merge(base, quiet_faq, burst), make_engine(make_detector(sequential=sequential)))[0])
    first_evidence = t + 16  # the 4th refusal (min_refused)
    sustain = 0 if sequential else 30
    assert first_evidence + sustain <= parse_ts(trig.detected_at) <= t + 21 + sustain + 10
    assert parse_ts(trig.window_end) == parse_ts(trig.detected_at)



@pytest.mark.parametrize("seed", [31, 32, 33])
def test_quiet_routes_are_judged_on_everything_since_the_rise(seed):
    """A route at one request a minute whose new prompt version refuses 40 %, and one at three a
    minute refusing 12 % over a 1.5 % baseline, for an hour: no 3-minute window ever holds enough
    requests, but the evidence since the rollout is overwhelming. Both are found within the hour,
    and the quiet routes' ordinary days raise nothing."""
    busy = stream(T0, 8 * HOUR, 1.0, 0.02, seed=seed, route="billing")
    rollout = T0 + 6 * HOUR
    one = [e for e in stream(T0, 8 * HOUR, 1 / 60, 0.02, seed=seed + 100, route="faq", id0=10**6)
           if e.ts < rollout]
    one += stream(rollout, HOUR, 1 / 60, 0.40, seed=seed + 200, route="faq", pv="v13", id0=2 * 10**6)
    three = [e for e in stream(T0, 8 * HOUR, 3 / 60, 0.015, seed=seed + 300, route="returns", id0=3 * 10**6)
             if e.ts < rollout]
    three += stream(rollout, HOUR, 3 / 60, 0.12, seed=seed + 400, route="returns", pv="v13", id0=4 * 10**6)
    incidents, _ = run(merge(busy, one, three), make_engine(make_detector(for_s=30.0)))
    found = {t.segment["route"]: parse_ts(t.detected_at) - rollout for t in triggers(incidents)}
    assert set(found) == {"faq", "returns"}, [t.summary for t in triggers(incidents)]
    assert all(0 < delay <= HOUR for delay in found.values()), found
    assert all(t.segment["prompt_version"] == "v13" for t in triggers(incidents))
