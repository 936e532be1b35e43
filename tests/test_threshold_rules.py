"""Unit tests: threshold rules (rules/threshold.py) — validation, aggregates, windows, lifecycle."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rules.threshold import ThresholdParams, ThresholdRule, _sketch_key, sketch_quantile
from semwatch.contract import RunEvent, parse_ts
from semwatch.engine.core import Engine, EngineOptions
from semwatch.engine.detector import DetectorEnv

T0 = 1_767_600_000.0  # a multiple of 60 and of 300


def params(**kw) -> ThresholdParams:
    return ThresholdParams.model_validate({"name": "r", "type": "threshold", **kw})


def engine(lateness: float = 0.0, **kw) -> Engine:
    rule = ThresholdRule(params(**kw), DetectorEnv(runbook_base_url="https://runbooks.test"))
    return Engine([rule], EngineOptions(allowed_lateness_s=lateness, tick_s=5))


def ev(i: int, ts: float, **fields) -> RunEvent:
    base = {"schema_version": "1", "event_id": f"e{i}", "run_id": f"r{i}", "ts": ts, "app": "a",
            "route": "chat", "model": "m"}
    base.update(fields)
    return RunEvent.model_validate(base)


def feed(eng: Engine, events) -> list:
    out = []
    for e in events:
        out.extend(eng.process(e))
    return out


def stream(seconds: int, every: float, start: float = T0, **fields_fn):
    """Events every ``every`` seconds; values from callables of the index."""
    out = []
    n = int(seconds / every)
    base_i = int((start - T0) / every) * 7 + 1000
    for k in range(n):
        fields = {key: fn(k) for key, fn in fields_fn.items()}
        fields = {key: v for key, v in fields.items() if v is not None}
        out.append(ev(base_i + k, start + k * every, **fields))
    return out


# -- validation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,loc,words", [
    ({"field": "x", "aggregate": "median", "above": 1}, ("aggregate",), "rate"),
    ({"field": "x", "above": 0.5, "below": 0.1}, ("below",), "both"),
    ({"field": "x"}, ("below",), "neither"),
    ({"field": "x", "above": 0.5, "clear": 0.6}, ("clear",), "at or below"),
    ({"field": "x", "aggregate": "mean", "below": 5, "clear": 4}, ("clear",), "at or above"),
    ({"aggregate": "p95", "above": 3}, ("field",), "needs a numeric field"),
    ({"aggregate": "rate", "above": 0.2}, ("where",), "field"),
    ({"field": "x", "above": 20}, ("above",), "share between 0 and 1"),
    ({"field": "x", "above": 0.2, "window_s": 300, "bucket_s": 70}, ("bucket_s",), "divide"),
    ({"field": "x", "above": 0.2, "summary": "{nope}"}, ("summary",), "unknown placeholder"),
    ({"field": "x", "above": 0.2, "summary": "{value:q}"}, ("summary",), "bad summary"),
    ({"field": "x", "above": 0.2, "window_s": 86400, "idle_ttl_s": 3600}, ("window_s",), "idle_ttl_s"),
    ({"field": "x", "above": 0.2, "thresold": 1}, ("thresold",), "Extra"),
    ({"field": "bad field!", "above": 0.2}, ("field",), "pattern"),
])
def test_validation_errors_name_the_field(kw, loc, words):
    with pytest.raises(ValidationError) as err:
        params(**kw)
    first = err.value.errors()[0]
    assert first["loc"] == loc, err.value.errors()
    assert words.lower() in first["msg"].lower()


def test_defaults_and_bucket_width():
    p = params(field="error_type", above=0.2)
    assert p.clear_at == 0.2 and p.bucket == 60 and p.n_buckets == 5
    assert params(field="x", above=0.2, window_s=90).bucket == 45
    assert params(field="x", above=0.2, window_s=30).bucket == 30


# -- aggregates -------------------------------------------------------------------------------------------
def test_error_rate_fires_at_a_bucket_boundary_and_resolves():
    eng = engine(field="error_type", window_s=300, bucket_s=60, min_volume=10, above=0.2, clear=0.1,
                 for_s=60, clear_for_s=60, group_by=["app", "model"], runbook_url="https://rb/errors")
    normal = stream(1800, 10, error_type=lambda k: "timeout" if k % 20 == 0 else None)
    assert feed(eng, normal) == []
    bad = stream(600, 10, start=T0 + 1800, error_type=lambda k: "timeout" if k % 2 == 0 else None)
    out = feed(eng, bad)
    [trig] = [i for i in out if i.event_action == "trigger"]
    at = parse_ts(trig.detected_at)
    assert at % 60 == 0 and T0 + 1800 < at <= T0 + 2400
    assert parse_ts(trig.window_end) == at and parse_ts(trig.window_start) == at - 300
    assert trig.kind == "threshold" and trig.runbook_url == "https://rb/errors"
    assert trig.segment == {"app": "a", "model": "m"} and trig.threshold == 0.2
    assert trig.observed > 0.2 and trig.evidence["volume"] >= 10 and trig.evidence["event_ids"]
    assert "above 20.0%" in trig.summary
    out = feed(eng, stream(1200, 10, start=T0 + 2400, error_type=lambda k: None)) + eng.advance_to(T0 + 9000)
    assert [i.event_action for i in out] == ["resolve"]
    assert out[0].dedup_key == trig.dedup_key and out[0].severity == trig.severity


def test_for_s_ignores_a_short_spike():
    eng = engine(field="error_type", window_s=60, bucket_s=60, min_volume=5, above=0.5, for_s=300)
    events = stream(600, 5, error_type=lambda k: None)
    events += stream(120, 5, start=T0 + 600, error_type=lambda k: "x")  # 2 min of errors
    events += stream(600, 5, start=T0 + 720, error_type=lambda k: None)
    assert feed(eng, events) + eng.advance_to(T0 + 5000) == []


def test_rate_by_where_condition():
    eng = engine(aggregate="rate", where={"finish_reason": "length"}, window_s=300, min_volume=20,
                 above=0.3)
    events = stream(900, 5, finish_reason=lambda k: "length" if k % 2 else "stop")
    out = feed(eng, events)
    assert [i.event_action for i in out] == ["trigger"]
    assert "finish_reason=length" in out[0].summary


def test_where_filters_the_population_for_other_aggregates():
    eng = engine(field="latency_s", aggregate="mean", where={"model": ["slow", "slower"]}, above=5,
                 group_by=["app"], min_volume=5)
    fast = stream(600, 5, latency_s=lambda k: 50.0)  # model m: not counted
    assert feed(eng, fast) + eng.advance_to(T0 + 2000) == []
    eng = engine(field="latency_s", aggregate="mean", where={"model": ["slow", "slower"]}, above=5,
                 group_by=["app"], min_volume=5)
    slow = stream(600, 5, latency_s=lambda k: 50.0, model=lambda k: "slow")
    assert [i.event_action for i in feed(eng, slow)] == ["trigger"]


def test_p95_latency_is_within_a_percent():
    eng = engine(field="latency_s", aggregate="p95", window_s=600, min_volume=100, above=30, clear=20)
    # 100 events per 10 min, latencies 1..100 s -> p95 = 95
    events = stream(1200, 6, latency_s=lambda k: float(k % 100 + 1))
    out = feed(eng, events)
    [trig] = out
    assert abs(trig.observed - 95) / 95 < 0.01
    assert trig.score == pytest.approx(trig.observed / 30)


def test_sketch_quantile_exact_enough():
    sk: dict[int, int] = {}
    for v in [0.0, 0.0, 0.5, 2.0, 1000.0]:
        sk[_sketch_key(v)] = sk.get(_sketch_key(v), 0) + 1
    assert sketch_quantile(sk, 0.4) == 0.0
    assert sketch_quantile(sk, 0.6) == pytest.approx(0.5, rel=0.01)
    assert sketch_quantile(sk, 1.0) == pytest.approx(1000.0, rel=0.01)
    assert sketch_quantile({}, 0.5) is None


def test_sum_of_metric_and_count_below():
    eng = engine(field="metrics.retries", aggregate="sum", window_s=300, above=50, group_by=["app"])
    out = feed(eng, stream(600, 5, metrics=lambda k: {"retries": 1.0}))
    assert [i.event_action for i in out] == ["trigger"] and out[0].observed > 50
    # traffic stopping is a count below threshold (min_volume 0 so that an empty window counts)
    eng = engine(aggregate="count", window_s=300, below=10, min_volume=0, for_s=60, group_by=["app"])
    out = feed(eng, stream(900, 5))
    assert out == []
    out = eng.advance_to(T0 + 900 + 600)
    assert [i.event_action for i in out] == ["trigger"] and out[0].observed < 10


def test_skip_missing_and_feedback_fields():
    kw = dict(field="feedback.thumbs_down", window_s=300, min_volume=5, above=0.5, group_by=["app"])
    events = stream(900, 5, feedback=lambda k: {"thumbs_down": True} if k % 10 == 0 else None)
    assert feed(engine(**kw), events) == []  # 10 % of all events
    assert [i.event_action for i in feed(engine(skip_missing=True, **kw), events)] == ["trigger"]


def test_group_by_separates_segments():
    eng = engine(field="error_type", window_s=300, min_volume=10, above=0.2, group_by=["app", "route"])
    good = stream(900, 5, error_type=lambda k: None, route=lambda k: "good")
    bad = [e.model_copy(update={"event_id": "bad-" + e.event_id})  # event ids are unique
           for e in stream(900, 5, error_type=lambda k: "x", route=lambda k: "bad")]
    events = sorted(good + bad, key=lambda e: (e.ts, e.event_id))
    out = feed(eng, events)
    assert [i.segment["route"] for i in out] == ["bad"]


def test_late_events_not_put_in_closed_windows_but_counted():
    eng = engine(lateness=30, field="error_type", window_s=300, bucket_s=60, min_volume=10, above=0.5)
    on_time = stream(900, 5, error_type=lambda k: None)
    assert feed(eng, on_time) == []
    late = [ev(90000 + k, T0 + 300 + k, error_type="x") for k in range(100)]  # 10 min behind
    assert feed(eng, late) == []
    state = next(v for k, v in eng.data.items() if k.startswith("r|"))
    assert state.late_dropped == 100
    # within the allowed lateness: still counted in its (open) bucket
    eng2 = engine(lateness=30, field="error_type", window_s=300, bucket_s=60, min_volume=1, above=0.5)
    feed(eng2, [ev(1, T0 + 100), ev(2, T0 + 80, error_type="x")])
    st = next(v for k, v in eng2.data.items() if k.startswith("r|"))
    assert st.late_dropped == 0 and sum(b.n for b in st.buckets.values()) == 2


def test_summary_template():
    eng = engine(field="error_type", window_s=300, min_volume=10, above=0.2, group_by=["app"],
                 summary="{value:.0%} errors on {segment} over {window}, {volume} calls")
    out = feed(eng, stream(600, 5, error_type=lambda k: "x"))
    assert out[0].summary == "100% errors on app=a over 5m, 12 calls"


def test_result_does_not_depend_on_batching_or_ticks():
    kw = dict(field="error_type", window_s=300, min_volume=10, above=0.2, clear=0.1, for_s=60)
    events = stream(3600, 7, error_type=lambda k: "x" if (k // 60) % 3 == 1 and k % 2 else None)
    a = engine(**kw)
    out_a = feed(a, events) + a.advance_to(T0 + 9000)
    rule = ThresholdRule(params(**kw), DetectorEnv(runbook_base_url="https://runbooks.test"))
    b = Engine([rule], EngineOptions(allowed_lateness_s=0, tick_s=60))
    out_b = b.process_batch(events) + b.advance_to(T0 + 9000)
    assert out_a and [i.to_dict() for i in out_a] == [i.to_dict() for i in out_b]


def test_low_volume_is_no_decision_but_an_empty_window_clears():
    kw = dict(field="error_type", window_s=300, bucket_s=60, min_volume=20, above=0.2, group_by=["app"])
    eng = engine(**kw)
    out = feed(eng, stream(600, 5, error_type=lambda k: "x"))
    assert [i.event_action for i in out] == ["trigger"]
    # a trickle of clean traffic below min_volume: the incident stays open ...
    out = feed(eng, stream(1200, 60, start=T0 + 600, error_type=lambda k: None))
    assert out == []
    # ... and resolves once the window holds no traffic at all
    out = eng.advance_to(T0 + 1800 + 600)
    assert [i.event_action for i in out] == ["resolve"]
    assert "no traffic in the window" in out[0].summary
