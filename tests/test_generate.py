"""Tests for semwatch.simulator.generate: deterministic, realistic synthetic labelled traffic."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict

import pytest

from semwatch.simulator import generate as gen_mod
from semwatch.simulator.generate import PRICES, add_arguments, generate, parse_duration, parse_time, run

START = parse_time("2026-01-05T00:00:00Z")  # a Monday
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
OLD_KINDS = {"false_refusal_spike", "wrong_entity_action", "token_spike", "cost_spike"}
RUNBOOK_KINDS = {"malformed_tool_call", "complaint_cluster", "grounding_drop"}
KINDS = OLD_KINDS | RUNBOOK_KINDS
QUIET_ROUTES = {"warranty": (1.0, 0.40), "accessibility": (3.0, 0.12)}  # daytime requests/min, spike rate
#: labels a day: one of each kind, plus a refusal spike on each quiet route
PER_DAY = {**{k: 1 for k in KINDS}, "false_refusal_spike": 1 + len(QUIET_ROUTES)}
SIDE_EFFECT_TOOLS = {"refund_order", "cancel_order", "update_address", "send_email"}


# ------------------------------------------------------------------ a hand-written contract check

def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate_event(ev: dict) -> list[str]:
    """Problems with one event against the normalized run event contract (docs/contracts.md)."""
    p = []
    for f in ("schema_version", "event_id", "run_id", "ts", "app", "model"):
        if f not in ev:
            p.append(f"missing {f}")
    if ev.get("schema_version") != "1":
        p.append("schema_version")
    for f in ("event_id", "run_id", "app", "model"):
        if not isinstance(ev.get(f), str) or not ev.get(f):
            p.append(f"{f} not a non-empty string")
    if not isinstance(ev.get("ts"), str) or not TS_RE.match(ev["ts"]):
        p.append(f"ts {ev.get('ts')!r}")
    for f in ("route", "provider", "prompt_version", "tenant", "conversation_id", "finish_reason", "error_type",
              "request_text", "response_text"):
        if f in ev and not isinstance(ev[f], str):
            p.append(f"{f} not a string")
    for f in ("input_tokens", "output_tokens"):
        if f in ev and not (_is_int(ev[f]) and ev[f] >= 0):
            p.append(f"{f} {ev[f]!r}")
    for f in ("cost_usd", "latency_s"):
        if f in ev and not (_is_num(ev[f]) and ev[f] >= 0):
            p.append(f"{f} {ev[f]!r}")
    for f in ("refusal", "request_flagged"):
        if f in ev and not isinstance(ev[f], bool):
            p.append(f"{f} not bool")
    if "subject" in ev:
        s = ev["subject"]
        if not isinstance(s, dict) or not all(isinstance(k, str) and isinstance(v, list) and
                                              all(isinstance(i, str) for i in v) for k, v in s.items()):
            p.append("subject")
    if "tool_calls" in ev:
        tcs = ev["tool_calls"]
        if not isinstance(tcs, list) or not tcs:
            p.append("tool_calls not a non-empty list")
        for tc in tcs or []:
            # arguments: an object, or (a malformed call) JSON text that does not parse to one
            if not (isinstance(tc, dict) and isinstance(tc.get("name"), str) and isinstance(tc.get("call_id"), str)
                    and isinstance(tc.get("arguments"), (dict, str))):
                p.append(f"tool call {tc!r}")
            elif "side_effect" in tc and not isinstance(tc["side_effect"], bool):
                p.append("side_effect not bool")
            elif "result" in tc and not isinstance(tc["result"], dict):
                p.append("result not an object")
            elif set(tc) - {"name", "call_id", "arguments", "side_effect", "result"}:
                p.append(f"tool call has extra keys {set(tc)}")
    if "feedback" in ev and not isinstance(ev["feedback"], dict):
        p.append("feedback")
    if "metrics" in ev and not (isinstance(ev["metrics"], dict) and
                                all(isinstance(k, str) and _is_num(v) for k, v in ev["metrics"].items())):
        p.append("metrics")
    if any(k.startswith("_") for k in ev):
        p.append("private key leaked")
    return p


def _ts(s: str) -> float:
    return parse_time(s)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def short_events():
    # 1 h around the daily peak at 3 ev/s
    events, labels = generate(seed=5, start=START + 13 * 3600, duration_s=3600, rate=3.0)
    return list(events), labels


@pytest.fixture(scope="module")
def incident_run():
    """6 h with one incident of each kind; every event carries the ground-truth `refusal` flag."""
    mp = pytest.MonkeyPatch()
    mp.setattr(gen_mod, "REFUSAL_FIELD_FRACTION", 1.0)
    try:
        events, labels = generate(seed=11, start=START + 9 * 3600, duration_s=6 * 3600, rate=1.0)
        evs = list(events)
    finally:
        mp.undo()
    return evs, labels


# ------------------------------------------------------------------ tests

def test_parse_duration_and_time():
    assert parse_duration("90s") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("6h") == 6 * 3600
    assert parse_duration("1d") == 86400
    assert parse_duration("2d") == 2 * 86400
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert parse_time("2026-01-05T00:00:00Z") == START
    assert parse_time("2026-01-05T01:00:00+01:00") == START
    assert parse_time(str(START)) == START


def _cli(tmp_path, name, *extra):
    p = argparse.ArgumentParser()
    add_arguments(p)
    out, lab = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.labels.jsonl"
    args = p.parse_args(["--start", "2026-01-05T12:00:00Z", "--duration", "15m", "--rate", "3",
                         "--out", str(out), "--labels", str(lab), *extra])
    assert run(args) == 0
    return out.read_bytes(), lab.read_bytes()


def test_determinism_same_seed_same_bytes(tmp_path):
    a = _cli(tmp_path, "a", "--seed", "7")
    b = _cli(tmp_path, "b", "--seed", "7")
    c = _cli(tmp_path, "c", "--seed", "8")
    assert a[0] == b[0] and a[1] == b[1]
    assert len(a[0]) > 50_000
    assert a[0] != c[0]


def test_determinism_labels_long_run():
    _, l1 = generate(seed=3, start=START, duration_s=7 * 86400, rate=3.0)
    _, l2 = generate(seed=3, start=START, duration_s=7 * 86400, rate=3.0)
    _, l3 = generate(seed=4, start=START, duration_s=7 * 86400, rate=3.0)
    assert l1 == l2 and l1 != l3
    assert Counter(l["kind"] for l in l1 if not l.get("optional")) == {k: 7 * n for k, n in PER_DAY.items()}


def test_events_follow_contract(short_events):
    events, _ = short_events
    assert len(events) > 5000
    for ev in events:
        problems = validate_event(ev)
        assert not problems, (problems, ev)
        json.dumps(ev)  # JSON-ready
    assert len({e["event_id"] for e in events}) == len(events)
    apps = Counter(e["app"] for e in events)
    assert set(apps) == {"support-bot", "order-agent", "research-agent", "code-assistant"}
    assert all(e["model"] in PRICES for e in events)
    # cost_usd present on ~70 %, consistent with the price table when present
    with_cost = [e for e in events if "cost_usd" in e]
    assert 0.6 < len(with_cost) / len(events) < 0.8
    for e in with_cost[:500]:
        pin, pout = PRICES[e["model"]]
        assert e["cost_usd"] == pytest.approx((e["input_tokens"] * pin + e["output_tokens"] * pout) / 1e6, abs=1e-7)
    assert {"stop", "tool_calls"} <= {e.get("finish_reason") for e in events}
    assert any(e.get("error_type") for e in events)
    assert any("@" in e.get("request_text", "") for e in events)  # PII material for privacy tests


def test_events_sorted_and_runs_ordered(short_events):
    events, _ = short_events
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    assert ts[0] >= "2026-01-05T13:00:00.000Z" and ts[-1] < "2026-01-05T14:00:00.000Z"
    by_run = defaultdict(list)
    for e in events:
        by_run[e["run_id"]].append(e["ts"])
    multi = [v for v in by_run.values() if len(v) > 1]
    assert multi, "agent runs have several steps"
    assert all(len(set(v)) == len(v) for v in multi)  # strictly increasing within a run


def test_rate_is_roughly_right(short_events):
    events, _ = short_events
    # 13:00-14:00 UTC on a weekday is near the daily peak: above the daily mean, below 2.5x
    assert 3.0 * 3600 < len(events) < 3.0 * 3600 * 2.5


def test_one_label_per_kind_per_day():
    for seed in (1, 2, 3):
        _, all_labels = generate(seed=seed, start=START, duration_s=86400, rate=3.0)
        labels = [l for l in all_labels if not l.get("optional")]
        assert Counter(l["kind"] for l in labels) == PER_DAY
        for l in labels:
            assert set(l) <= {"kind", "start", "end", "segment", "note", "run_id"}
            assert TS_RE.match(l["start"]) and TS_RE.match(l["end"])
            assert _ts(l["start"]) >= START + 3 * 3600
            assert l["start"] <= l["end"] and _ts(l["end"]) <= START + 86400
            assert l["segment"]["app"] and l["segment"]["route"]
        assert _ts(next(l for l in labels if l["kind"] == "malformed_tool_call")["end"]) - _ts(
            next(l for l in labels if l["kind"] == "malformed_tool_call")["start"]) <= 60 * 60 + 1
        fr = _busy_refusal_spike(labels)
        assert set(fr["segment"]) == {"app", "route", "model", "prompt_version"}
        assert 30 * 60 - 1 <= _ts(fr["end"]) - _ts(fr["start"]) <= 90 * 60 + 1
        quiet = [l for l in labels if l["segment"]["route"] in QUIET_ROUTES]
        assert sorted(l["segment"]["route"] for l in quiet) == sorted(QUIET_ROUTES)
        for l in quiet:  # an hour in the daytime
            assert l["kind"] == "false_refusal_spike" and set(l["segment"]) == set(fr["segment"])
            assert _ts(l["end"]) - _ts(l["start"]) == pytest.approx(3600, abs=0.002)
            assert START + 11 * 3600 <= _ts(l["start"]) <= START + 18 * 3600
        cs = next(l for l in labels if l["kind"] == "cost_spike")
        assert set(cs["segment"]) == {"app", "route"}
        for k in ("wrong_entity_action", "token_spike"):
            assert next(l for l in labels if l["kind"] == k)["run_id"].startswith("run_")
    _, none = generate(seed=1, start=START, duration_s=86400, rate=3.0, incidents=False)
    assert [l for l in none if not l.get("optional")] == []


def test_provider_bursts_are_optional_threshold_labels_with_the_errors_they_cause():
    events, labels = generate(seed=2, start=START, duration_s=2 * 86400, rate=1.0, incidents=False)
    bursts = [l for l in labels if l.get("optional")]
    assert bursts and all(l["kind"] == "threshold" and set(l["segment"]) == {"provider"} for l in bursts)
    inside = outside = failed_inside = failed_outside = 0
    for ev in events:
        t = _ts(ev["ts"])
        hit = any(l["segment"]["provider"] == ev.get("provider") and _ts(l["start"]) <= t <= _ts(l["end"])
                  for l in bursts)
        failed = ev.get("error_type") == "rate_limit"
        inside += hit
        outside += not hit
        failed_inside += hit and failed
        failed_outside += failed and not hit
    assert failed_inside / inside > 5 * failed_outside / outside  # the labels mark real error bursts


def _in_segment(ev, seg):
    return all(ev.get(k) == v for k, v in seg.items())


def _busy_refusal_spike(labels):
    return next(l for l in labels if l["kind"] == "false_refusal_spike" and l["segment"]["route"] not in QUIET_ROUTES)


def test_refusal_base_rate_and_false_refusal_spike(incident_run):
    events, labels = incident_run
    fr = _busy_refusal_spike(labels)
    a, b = fr["start"], fr["end"]
    chat = [e for e in events if e["app"] == "support-bot" and "response_text" in e]
    assert all("refusal" in e for e in chat)
    spikes = [l for l in labels if l["kind"] == "false_refusal_spike"]
    outside = [e for e in chat if not any(l["start"] <= e["ts"] <= l["end"] and _in_segment(e, l["segment"])
                                          for l in spikes)]
    base = sum(e["refusal"] for e in outside) / len(outside)
    assert 0.005 < base < 0.05, base
    ordinary_out = [e for e in outside if not e.get("request_flagged")]
    assert sum(e["refusal"] for e in ordinary_out) / len(ordinary_out) < 0.04
    flagged = [e for e in chat if e.get("request_flagged")]
    assert flagged and sum(e["refusal"] for e in flagged) / len(flagged) > 0.6

    inside = [e for e in chat if a <= e["ts"] <= b and _in_segment(e, fr["segment"])]
    assert len(inside) >= 30
    spike = sum(e["refusal"] for e in inside if not e.get("request_flagged")) / len(inside)
    assert spike > 0.2 and spike > 5 * base, (spike, base)
    # the bad version only exists inside the window, and the route goes back afterwards
    seg_route = [e for e in chat if e["route"] == fr["segment"]["route"]]
    bad = [e for e in seg_route if e["prompt_version"] == fr["segment"]["prompt_version"]]
    # (requests in flight at the rollback complete up to a few seconds after it)
    late = gen_mod.format_ts(_ts(b) + 120)
    assert bad and all(a <= e["ts"] <= late for e in bad)
    after = [e for e in seg_route if e["ts"] > late]
    assert after and after[0]["prompt_version"] != fr["segment"]["prompt_version"]
    # refusals are phrased in many ways
    texts = {e["response_text"] for e in chat if e["refusal"]}
    assert len(texts) > 0.7 * len([e for e in chat if e["refusal"]])


def _side_effect_violations(run_events):
    """Side-effecting tool calls whose order_id is neither in subject nor in an earlier result."""
    known: set[str] = set()
    bad = []
    for ev in run_events:
        known.update(ev.get("subject", {}).get("order_id", []))
        for tc in ev.get("tool_calls", []):
            # a malformed call (JSON text, an empty id) names no order
            oid = tc["arguments"].get("order_id") if isinstance(tc["arguments"], dict) else None
            if tc["name"] in SIDE_EFFECT_TOOLS and oid and oid not in known:
                bad.append((ev, tc))
        for tc in ev.get("tool_calls", []):
            known.update(re.findall(r"#W\d+", json.dumps(tc.get("result", {}))))
    return bad


def test_wrong_entity_action(incident_run):
    events, labels = incident_run
    we = next(l for l in labels if l["kind"] == "wrong_entity_action")
    by_run = defaultdict(list)
    for e in events:
        if e["app"] == "order-agent":
            by_run[e["run_id"]].append(e)
    run_evs = by_run[we["run_id"]]
    bad = _side_effect_violations(run_evs)
    assert len(bad) == 1
    ev, tc = bad[0]
    assert ev["ts"] == we["start"] == we["end"]
    assert tc["arguments"]["order_id"] not in ev["subject"]["order_id"]
    assert _in_segment(ev, we["segment"])
    # every other order-agent run only acts on entities it was given or has read
    others = {rid: evs for rid, evs in by_run.items() if rid != we["run_id"]}
    assert sum(1 for evs in others.values() for e in evs for tc in e.get("tool_calls", [])
               if tc["name"] in SIDE_EFFECT_TOOLS) > 50
    assert not [v for evs in others.values() for v in _side_effect_violations(evs)]


def test_token_spike_run(incident_run):
    events, labels = incident_run
    ts_l = next(l for l in labels if l["kind"] == "token_spike")
    run_evs = [e for e in events if e["run_id"] == ts_l["run_id"]]
    assert 40 <= len(run_evs) <= 150
    assert run_evs[0]["ts"] == ts_l["start"] and run_evs[-1]["ts"] == ts_l["end"]
    # tight: at a normal run's pace (~1-10 s a step); polling: spread over 10-40 min
    assert 40 <= _ts(ts_l["end"]) - _ts(ts_l["start"]) <= 41 * 60
    per_step = (_ts(ts_l["end"]) - _ts(ts_l["start"])) / (len(run_evs) - 1)
    assert per_step < 15 if "tight" in ts_l["note"] else per_step > 4 and "polling" in ts_l["note"]
    assert run_evs[-1]["input_tokens"] > 5 * run_evs[0]["input_tokens"]
    normal_max = max(Counter(e["run_id"] for e in events if e["run_id"] != ts_l["run_id"]).values())
    assert normal_max < 40


def test_cost_spike_switches_model(incident_run):
    events, labels = incident_run
    cs = next(l for l in labels if l["kind"] == "cost_spike")
    seg = [e for e in events if _in_segment(e, cs["segment"])]
    inside = [e for e in seg if cs["start"] <= e["ts"] <= cs["end"]]
    before = [e for e in seg if e["ts"] < cs["start"]]
    assert inside and before
    # requests in flight at the switch complete on the old model; nearly all are on the new one
    m, n = Counter(e["model"] for e in inside).most_common(1)[0]
    assert n >= 0.9 * len(inside) and m != before[-1]["model"]
    assert m in cs["note"]
    old = before[-1]["model"]
    ratio = (10 * PRICES[m][0] + PRICES[m][1]) / (10 * PRICES[old][0] + PRICES[old][1])
    assert 10 <= ratio <= 30


def test_benign_churn_exists(incident_run):
    events, labels = incident_run
    fr = _busy_refusal_spike(labels)
    versions = defaultdict(set)
    for e in events:
        if e.get("prompt_version") != fr["segment"]["prompt_version"] or e["route"] != fr["segment"]["route"]:
            versions[(e["app"], e["route"])].add(e["prompt_version"])
    assert any(len(v) > 1 for v in versions.values()), "benign prompt rollouts"
    _, labels_day = generate(seed=11, start=START, duration_s=86400, rate=3.0)
    assert len(labels_day) == sum(PER_DAY.values())  # churn is not labelled


def test_no_incidents_has_no_spike():
    mp = pytest.MonkeyPatch()
    mp.setattr(gen_mod, "REFUSAL_FIELD_FRACTION", 1.0)
    try:
        events, labels = generate(seed=11, start=START + 8 * 3600, duration_s=3 * 3600, rate=1.0, incidents=False)
        chat = [e for e in events if e["app"] == "support-bot" and "refusal" in e]
    finally:
        mp.undo()
    assert labels == []
    rate = sum(e["refusal"] for e in chat) / len(chat)
    assert rate < 0.05


# ------------------------------------------------------------------ the runbook symptoms

#: sha256 (first 16 hex digits) of the labels of 2 days at 3 ev/s from 2026-01-05, before the runbook
#: incidents and the quiet routes were added: adding them changed none of the existing incidents or labels.
OLD_LABELS = {1: "a969d9f0959f4671", 2: "1d5e58f2375705bd", 3: "9646e8b47c855fcf"}


def _digest(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("seed", sorted(OLD_LABELS))
def test_the_runbook_incidents_and_quiet_routes_leave_every_existing_label_as_it_was(seed):
    _, labels = generate(seed=seed, start=START, duration_s=2 * 86400, rate=3.0)
    quiet = [l for l in labels if l["segment"].get("route") in QUIET_ROUTES]
    old = [l for l in labels if l["kind"] not in RUNBOOK_KINDS and l not in quiet]
    assert _digest(old) == OLD_LABELS[seed]
    assert Counter(l["kind"] for l in labels if l["kind"] in RUNBOOK_KINDS) == {k: 2 for k in RUNBOOK_KINDS}
    assert Counter(l["segment"]["route"] for l in quiet) == {r: 2 for r in QUIET_ROUTES}


def test_the_quiet_routes_leave_every_other_event_as_it_was(short_events):
    events, _ = short_events
    busy = [e for e in events if e["route"] not in QUIET_ROUTES]
    assert len(busy) < len(events)
    assert (len(busy), _digest(busy)) == (18464, "f9f7a4d08f16ce9c")  # as generated before they were added


@pytest.fixture(scope="module")
def quiet_days():
    """Two days of the quiet routes only, with the ground-truth `refusal` flag on every answer."""
    mp = pytest.MonkeyPatch()
    mp.setattr(gen_mod, "REFUSAL_FIELD_FRACTION", 1.0)
    try:
        events, labels = generate(seed=2, start=START, duration_s=2 * 86400, rate=0.5)
        evs = [e for e in events if e["route"] in QUIET_ROUTES]
    finally:
        mp.undo()
    return evs, [l for l in labels if l["segment"].get("route") in QUIET_ROUTES]


def test_quiet_routes_traffic_baseline_and_refusal_spikes(quiet_days):
    events, labels = quiet_days
    assert len(labels) == 4 and len({e["event_id"] for e in events}) == len(events)
    for route, (per_min, spike_rate) in QUIET_ROUTES.items():
        evs = [e for e in events if e["route"] == route]
        assert not [p for e in evs for p in validate_event(e)]
        hour = Counter(int(_ts(e["ts"]) - START) // 3600 % 24 for e in evs)
        day, night = sum(hour[h] for h in range(10, 20)) / 1200, sum(hour[h] for h in range(2, 6)) / 480
        assert 0.75 * per_min < day < 1.25 * per_min and night < 0.35 * day, (route, day, night)
        spikes = [l for l in labels if l["segment"]["route"] == route]
        answered = [e for e in evs if "refusal" in e and not e.get("request_flagged")]
        inside = [e for e in answered if any(l["start"] <= e["ts"] <= l["end"] and _in_segment(e, l["segment"])
                                             for l in spikes)]
        outside = [e for e in answered if not any(l["start"] <= e["ts"] <= l["end"] for l in spikes)]
        base = sum(e["refusal"] for e in outside) / len(outside)
        assert 0.008 < base < 0.03, (route, base)
        assert len(inside) > 0.6 * 2 * 60 * per_min  # two daytime hours
        assert abs(sum(e["refusal"] for e in inside) / len(inside) - spike_rate) < 0.07
        # the bad version exists only in its window (requests in flight complete a little later)
        for l in spikes:
            bad = [e for e in evs if e["prompt_version"] == l["segment"]["prompt_version"]]
            assert bad and all(l["start"] <= e["ts"] <= gen_mod.format_ts(_ts(l["end"]) + 120) for e in bad)
    # benign rollouts too: more versions than the spikes' and their predecessors'
    assert len({e["prompt_version"] for e in events if e["route"] == "warranty"}) > 3


@pytest.fixture(scope="module")
def runbook_day():
    events, labels = generate(seed=1, start=START, duration_s=86400, rate=1.5)
    return list(events), labels


def _broken(call) -> bool:
    args = call["arguments"]
    return isinstance(args, str) or any(v == "" or (isinstance(v, str) and v[:1] in "<{") or v == "string"
                                        for v in args.values())


def test_malformed_tool_calls_after_a_model_switch(runbook_day):
    events, labels = runbook_day
    lab = next(l for l in labels if l["kind"] == "malformed_tool_call")
    route = {k: lab["segment"][k] for k in ("app", "route")}
    inside = [c for e in events if _in_segment(e, lab["segment"]) and lab["start"] <= e["ts"] <= lab["end"]
              for c in e.get("tool_calls", [])]
    outside = [c for e in events if e["app"] == "order-agent" and not (lab["start"] <= e["ts"] <= lab["end"])
               for c in e.get("tool_calls", [])]
    assert len(inside) > 50
    assert sum(map(_broken, inside)) / len(inside) > 0.1
    assert 0 < sum(map(_broken, outside)) / len(outside) < 0.01  # background: occasional broken calls
    models = {e["model"] for e in events if _in_segment(e, route) and e["ts"] < lab["start"]}
    assert lab["segment"]["model"] not in models  # a switch to a model the route did not use


def test_complaint_burst_on_one_route_about_one_theme(runbook_day):
    events, labels = runbook_day
    lab = next(l for l in labels if l["kind"] == "complaint_cluster")
    theme = lab["note"].split("'")[1]
    inside = [e for e in events if _in_segment(e, lab["segment"]) and lab["start"] <= e["ts"] <= lab["end"]
              and "response_text" in e]
    complaints = [e["feedback"]["comment"] for e in inside if e.get("feedback", {}).get("comment")]
    on_theme = [c for c in complaints if all(w in c.lower() for w in theme.split()[:1])]
    assert len(on_theme) >= 5 and len(on_theme) > len(complaints) / 2
    background = [e for e in events if e.get("feedback", {}).get("thumbs_down") and e["ts"] < lab["start"]]
    assert background and sum("comment" in e["feedback"] for e in background) / len(background) > 0.4


def test_grounding_scores_drop_after_a_retrieval_change(runbook_day):
    events, labels = runbook_day
    lab = next(l for l in labels if l["kind"] == "grounding_drop")
    scores = [(e["ts"], e["metrics"]["groundedness"]) for e in events
              if _in_segment(e, lab["segment"]) and "groundedness" in e.get("metrics", {})]
    inside = [s for t, s in scores if lab["start"] <= t <= lab["end"]]
    before = [s for t, s in scores if t < lab["start"]]
    assert len(inside) >= 10 and len(before) > 50
    assert sum(before) / len(before) - sum(inside) / len(inside) > 0.15
    versions = {e["prompt_version"] for e in events if _in_segment(e, lab["segment"])
                and lab["start"] <= e["ts"] <= lab["end"] and e.get("metrics", {}).get("groundedness")}
    assert any(f"v{v}" in lab["note"] for v in [x[1:] for x in versions])
