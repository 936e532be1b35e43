"""semwatch evaluate: matching rules, per-row metrics and the NAB score, on hand-made cases."""

from __future__ import annotations

import argparse
import json

import pytest

from semwatch.contract import format_ts
from semwatch.offline import evaluate as ev
from semwatch.offline.evaluate import evaluate, scaled_sigmoid, segments_consistent

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z
SEG = {"app": "order-agent", "route": "refunds", "model": "m1"}


def trig(at: float, detector: str = "loop", kind: str = "token_spike", segment=None,
         action: str = "trigger") -> dict:
    return {"event_action": action, "kind": kind, "detector": detector,
            "segment": dict(SEG if segment is None else segment), "detected_at": format_ts(at),
            "summary": f"{detector} at {at}"}


def label(start: float, end: float, kind: str = "token_spike", segment=None) -> dict:
    return {"kind": kind, "start": format_ts(start), "end": format_ts(end),
            "segment": dict(SEG if segment is None else segment)}


# -- matching rules ----------------------------------------------------------------------------------
def test_segment_consistency_compares_only_shared_keys():
    assert segments_consistent({"app": "a"}, {"app": "a", "route": "r"})
    assert segments_consistent({"app": "a", "model": "x"}, {"app": "a", "route": "r"})
    assert not segments_consistent({"app": "a", "route": "r"}, {"app": "a", "route": "s"})
    assert segments_consistent({}, {"app": "a"})


@pytest.mark.parametrize("segment,matches", [
    ({"app": "order-agent"}, True),  # coarser incident: app-wide
    ({"app": "order-agent", "route": "refunds", "model": "m1", "prompt_version": "v3"}, True),
    ({"app": "order-agent", "route": "returns"}, False),  # a shared key differs
    ({"app": "support-bot"}, False),
])
def test_trigger_segment_must_be_consistent_with_the_label(segment, matches):
    rep = evaluate([trig(T0 + 60, segment=segment)], [label(T0, T0 + 600)], days=1)
    assert rep.row("loop").detected == int(matches)
    assert rep.row("loop").false_alarms == int(not matches)


def test_kind_must_agree_and_another_kinds_window_makes_a_trigger_related():
    rep = evaluate([trig(T0 + 60, kind="cost_spike")], [label(T0, T0 + 600)], days=1)
    assert rep.row("all").detected == 0
    row = rep.row("loop", "cost_spike")
    assert (row.false_alarms, row.related, row.precision) == (0, 1, 1.0)
    assert rep.related[0]["windows"][0]["kind"] == "token_spike" and not rep.false_alarms


def test_strict_kinds_counts_another_kinds_window_as_a_false_alarm():
    rep = evaluate([trig(T0 + 60, kind="cost_spike")], [label(T0, T0 + 600)], days=1, strict_kinds=True)
    row = rep.row("loop", "cost_spike")
    assert (row.false_alarms, row.related, row.precision) == (1, 0, 0.0)


def test_a_trigger_far_from_another_kinds_window_is_still_a_false_alarm():
    rep = evaluate([trig(T0 + 5000, kind="cost_spike")], [label(T0, T0 + 600)], days=1)
    assert rep.row("loop", "cost_spike").false_alarms == 1


def test_optional_windows_excuse_triggers_and_cost_nothing_when_missed():
    optional = {**label(T0, T0 + 600, kind="threshold", segment={"provider": "openai"}), "optional": True}
    rep = evaluate([trig(T0 + 60, detector="error-rate", kind="threshold")],
                   [optional, label(T0 + 9000, T0 + 9600)], days=1)
    thr = rep.row("error-rate")
    assert (thr.windows, thr.false_alarms, thr.related, thr.recall) == (0, 0, 1, None)
    assert rep.row("all").windows == 1 and rep.row("all").missed == 1  # only the required window
    # Optional or not, a window of the right kind far away excuses nothing.
    rep = evaluate([trig(T0 + 5000, detector="error-rate", kind="threshold")], [optional], days=1)
    assert rep.row("error-rate").false_alarms == 1
    # Missing an optional window is no miss.
    rep = evaluate([], [optional], days=1)
    assert rep.row("all").windows == 0 and rep.row("all").missed == 0


@pytest.mark.parametrize("offset,matches", [
    (-119, True), (-121, False),  # default slack before the start: 120 s
    (600 + 899, True), (600 + 901, False),  # default grace after the end: 900 s
    (300, True),
])
def test_time_slack_around_the_window(offset, matches):
    rep = evaluate([trig(T0 + offset)], [label(T0, T0 + 600)], days=1)
    assert rep.row("loop").detected == int(matches)


def test_slack_is_configurable():
    rep = evaluate([trig(T0 - 250), trig(T0 + 600 + 100, detector="late")],
                   [label(T0, T0 + 600)], days=1, slack_before_s=300, slack_after_s=60)
    assert rep.row("loop").detected == 1
    assert rep.row("late").detected == 0 and rep.row("late").false_alarms == 1


def test_resolves_are_not_triggers():
    rep = evaluate([trig(T0 + 60), trig(T0 + 700, action="resolve"), trig(T0 + 50_000, action="resolve")],
                   [label(T0, T0 + 600)], days=1)
    r = rep.row("loop")
    assert (r.triggers, r.false_alarms, r.precision) == (1, 0, 1.0)


# -- metrics -----------------------------------------------------------------------------------------
def test_known_answers_precision_recall_false_alarms_ttd():
    labels = [label(T0, T0 + 600), label(T0 + 10_000, T0 + 10_600), label(T0 + 20_000, T0 + 20_000),
              label(T0 + 30_000, T0 + 30_300)]
    incidents = [
        trig(T0 + 60),            # window 1, after 60 s
        trig(T0 + 90),            # duplicate in window 1: matched, not a false alarm
        trig(T0 + 10_300),        # window 2, after 300 s
        trig(T0 + 20_000 + 30),   # point window 3, after 30 s
        trig(T0 + 40_000),        # false alarm
        trig(T0 + 50_000),        # false alarm
    ]                             # window 4 missed
    rep = evaluate(incidents, labels, days=2.0)
    r = rep.row("loop")
    assert (r.windows, r.detected, r.missed) == (4, 3, 1)
    assert (r.triggers, r.matched_triggers, r.false_alarms) == (6, 4, 2)
    assert r.false_alarms_per_day == pytest.approx(1.0)
    assert r.precision == pytest.approx(4 / 6)
    assert r.recall == pytest.approx(0.75)
    assert r.ttd_median_s == pytest.approx(60.0)
    assert r.ttd_p90_s == pytest.approx(60 + 0.8 * 240)  # linear between 60 and 300
    assert [w["detected_by"].get("loop", {}).get("ttd_s") for w in rep.windows] == [60.0, 300.0, 30.0, None]
    assert [fa["detected_at"] for fa in rep.false_alarms] == [format_ts(T0 + 40_000), format_ts(T0 + 50_000)]


def test_rows_per_detector_per_kind_and_all():
    labels = [label(T0, T0 + 600), label(T0 + 5000, T0 + 5600, kind="cost_spike", segment={"app": "a"})]
    incidents = [trig(T0 + 60, detector="loop"),
                 trig(T0 + 120, detector="burn", segment={"app": "order-agent"}),
                 trig(T0 + 5100, detector="cost", kind="cost_spike", segment={"app": "a", "route": "r"})]
    rep = evaluate(incidents, labels, detectors={"quiet": "token_spike", "loop": "token_spike"}, days=1)
    scopes = [(r.scope, r.detector, r.kind) for r in rep.rows]
    assert scopes == [("detector", "quiet", "token_spike"), ("detector", "loop", "token_spike"),
                      ("detector", "burn", "token_spike"), ("detector", "cost", "cost_spike"),
                      ("kind", "all", "token_spike"), ("kind", "all", "cost_spike"), ("all", "all", "all")]
    quiet = rep.row("quiet")
    assert (quiet.triggers, quiet.recall, quiet.precision, quiet.nab_score) == (0, 0.0, None, 0.0)
    token = rep.row("all", "token_spike")
    assert (token.windows, token.detected, token.triggers, token.ttd_median_s) == (1, 1, 2, 60.0)
    overall = rep.row("all")
    assert (overall.windows, overall.detected, overall.false_alarms, overall.recall) == (2, 2, 0, 1.0)


def test_a_detector_without_windows_of_its_kind_has_no_recall():
    rep = evaluate([trig(T0 + 5000, detector="errors", kind="threshold")], [label(T0, T0 + 600)], days=0.5)
    r = rep.row("errors")
    assert (r.windows, r.recall, r.nab_score) == (0, None, None)
    assert (r.false_alarms, r.false_alarms_per_day) == (1, 2.0)


def test_day_count_sources():
    labels = [label(T0, T0 + 600)]
    inc = [trig(T0 + 43_200)]  # half a day after the label's start
    assert evaluate(inc, labels).days == pytest.approx(0.5)
    assert "span" in evaluate(inc, labels).days_from
    rep = evaluate(inc, labels, start=T0 - 43_200, end=T0 + 129_600)
    assert rep.days == pytest.approx(2.0) and rep.days_from == "start/end"
    assert rep.row("loop").false_alarms_per_day == pytest.approx(0.5)
    assert evaluate(inc, labels, days=4).row("loop").false_alarms_per_day == pytest.approx(0.25)


# -- NAB ---------------------------------------------------------------------------------------------
def test_scaled_sigmoid_shape():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.9866, abs=1e-4)
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(-0.5) > scaled_sigmoid(-0.2) > 0
    assert scaled_sigmoid(5.0) == -1.0


def test_nab_orders_early_over_late_over_missed():
    lab = [label(T0, T0 + 3600)]

    def score(incidents):
        return evaluate(incidents, lab, days=1).row("all").nab_score

    early, late = score([trig(T0 + 60)]), score([trig(T0 + 3600 + 600)])
    very_late = score([trig(T0 + 3600 + 890)])
    missed = score([])
    assert early > late > very_late > missed
    assert missed == pytest.approx(0.0)  # as good as the null detector
    assert score([trig(T0 - 120)]) == pytest.approx(100.0)  # the perfect detector: start of the interval
    assert score([trig(T0 + 60), trig(T0 + 90_000)]) < early  # a false alarm costs A_fp
    noisy = score([trig(T0 + 60)] + [trig(T0 + 20_000 + i * 1000) for i in range(20)])
    assert noisy < early
    assert score([trig(T0 + 20_000 + i * 1000) for i in range(5)]) < 0  # worse than silence


def test_nab_raw_score_formula():
    lab = [label(T0, T0 + 600), label(T0 + 10_000, T0 + 10_600)]
    at = T0 + 300
    rep = evaluate([trig(at), trig(T0 + 50_000)], lab, days=1, a_fp=0.2)
    lo, hi = T0 - 120, T0 + 600 + 900
    expected_raw = scaled_sigmoid((at - hi) / (hi - lo)) - 1.0 - 0.2
    r = rep.row("loop")
    assert r.nab_raw == pytest.approx(expected_raw)
    null, perfect = -2.0, 2 * scaled_sigmoid(-1.0)
    assert r.nab_score == pytest.approx(100 * (expected_raw - null) / (perfect - null))


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    inc_path, lab_path, out = tmp_path / "i.jsonl", tmp_path / "l.jsonl", tmp_path / "r.json"
    inc_path.write_text("\n".join(json.dumps(i) for i in [trig(T0 + 60), trig(T0 + 40_000)]) + "\n")
    lab_path.write_text(json.dumps(label(T0, T0 + 600)) + "\n")
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    args = parser.parse_args(["--incidents", str(inc_path), "--labels", str(lab_path), "--json", str(out),
                              "--days", "2"])
    assert ev.run(args) == 0
    text = capsys.readouterr().out
    assert "FA/day" in text and "loop" in text and "NAB" in text
    data = json.loads(out.read_text())
    row = next(r for r in data["rows"] if r["scope"] == "all")
    assert (row["detected"], row["false_alarms"], row["false_alarms_per_day"]) == (1, 1, 0.5)
    assert data["matching"] == {"slack_before_s": 120.0, "slack_after_s": 900.0, "strict_kinds": False}


def test_cli_names_the_bad_line(tmp_path, capsys):
    inc_path, lab_path = tmp_path / "i.jsonl", tmp_path / "l.jsonl"
    inc_path.write_text(json.dumps(trig(T0)) + "\n{not json\n")
    lab_path.write_text(json.dumps(label(T0, T0 + 600)) + "\n")
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    assert ev.run(parser.parse_args(["--incidents", str(inc_path), "--labels", str(lab_path)])) == 2
    assert f"{inc_path}:2: not JSON" in capsys.readouterr().err
