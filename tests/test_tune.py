"""semwatch tune: sweep spaces, the shared pre-enriched events, choice under a budget, the tuned
config directory and the report, on 8 simulated hours (about 10k events, a few seconds of CPU)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import yaml

from semwatch.config import import_all_detectors, load_config
from semwatch.contract import RunEvent
from semwatch.engine.detector import REGISTRY
from semwatch.engine.tuning import candidates, describe, resolve_space, unknown_params
from semwatch.offline import tune as tn
from semwatch.offline.evaluate import Row, evaluate
from semwatch.offline.replay import replay_events
from semwatch.simulator.generate import generate

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"
START = 1_767_571_200.0  # Monday 2026-01-05T00:00:00Z
SWEPT = ["wrong-entity-action", "runaway-loop", "cost-per-route"]
BUDGET = 3.0  # per day: at most one false alarm in the 8 hours


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    events, labels = generate(1, START, 8 * 3600, rate=1.0)
    raw = list(events)
    d = tmp_path_factory.mktemp("tune-data")
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in raw))
    (d / "labels.jsonl").write_text("".join(json.dumps(lab) + "\n" for lab in labels))
    assert {lab["kind"] for lab in labels} >= {"token_spike", "cost_spike", "wrong_entity_action"}
    return d, raw, labels


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


def parsed(raw: list[dict]) -> list[RunEvent]:
    return [RunEvent.model_validate(e) for e in raw]


def only(config, names):
    return config.with_params([p for p in config.detector_params if p.name in names])


# -- sweep spaces ------------------------------------------------------------------------------------
def test_every_configured_detector_has_a_valid_sweep_space(config):
    for p in config.detector_params:
        assert unknown_params(p) == [], f"{p.name}: its tuning_space names knobs {p.type} does not have"
        space = resolve_space(p)
        assert space, f"{p.name}: no sweep space for type {p.type}"
        cands = candidates(p)
        assert cands[0] == ({}, p)  # the configured setting comes first
        assert len(cands) > 1
        for update, cp in cands[1:]:
            assert cp != p and type(cp) is type(p)
            for k, v in update.items():
                assert getattr(cp, k) == v
            if getattr(cp, "clear", None) is not None and getattr(cp, "above", None) is not None:
                assert cp.clear <= cp.above  # hysteresis moved with the level


def test_relative_values_and_the_rule_level():
    from rules.threshold import ThresholdParams

    p = ThresholdParams(name="slow", type="threshold", field="latency_s", aggregate="p95", below=2.0,
                        clear=3.0, for_s=120)
    space = resolve_space(p)
    assert space["below"] == [1.0, 1.5, 2.0, 3.0] and space["for_s"] == [60.0, 120.0]
    assert "above" not in space
    labels = [describe(u) for u, _ in candidates(p)]
    assert labels[0] == "configured" and "below=1 for_s=60 clear=1.5" in labels


# -- the shared events --------------------------------------------------------------------------------
def test_pre_enriched_events_replay_identically(data, config):
    _, raw, _ = data
    cfg = only(config, {"false-refusal-spike", "cost-per-route"})
    fresh = replay_events(parsed(raw), cfg)
    events = tn.enrich(parsed(raw), config)
    assert sum(e.refusal is not None for e in events) > sum(r.get("refusal") is not None for r in raw)
    assert sum(e.cost_usd is not None for e in events) > sum(r.get("cost_usd") is not None for r in raw)
    shared = replay_events(events, cfg)
    again = replay_events(events, cfg)  # the same objects, a second run
    first = [i.to_dict() for i in fresh.incidents]
    assert first
    assert first == [i.to_dict() for i in shared.incidents] == [i.to_dict() for i in again.incidents]


def test_detectors_are_independent_so_single_runs_add_up(data, config):
    _, raw, _ = data
    events = tn.enrich(parsed(raw), config)

    def key(i):
        return (i.detector, i.event_action, i.detected_at, tuple(sorted(i.segment.items())))

    together = sorted(key(i) for i in replay_events(events, only(config, set(SWEPT))).incidents)
    alone = sorted(key(i) for name in SWEPT for i in replay_events(events, only(config, {name})).incidents)
    assert together and together == alone


# -- choice -----------------------------------------------------------------------------------------
def _cand(i, fa, recall, nab, configured=False):
    import_all_detectors()
    p = REGISTRY["runaway_loop"].Params(name="x", type="runaway_loop")
    row = Row("x", "token_spike", "detector", windows=2, false_alarms_per_day=fa, recall=recall,
              nab_score=nab)
    return tn.Candidate("x", i, {} if configured else {"k": i}, p, f"c{i}", configured, row=row)


def _sweep(cands, windows=2):
    p = cands[0].params
    return tn.DetectorSweep("x", "runaway_loop", "token_spike", p, cands, windows=windows)


def test_choice_recall_first_then_earliness_within_the_budget():
    s = _sweep([_cand(0, 0.5, 0.5, 40, True), _cand(1, 0.9, 1.0, 80), _cand(2, 0.2, 1.0, 95),
                _cand(3, 5.0, 1.0, 99), _cand(4, 0.0, 0.5, 45)])
    tn._choose(s, labelled=True, budget=1.0, pick_by_volume=False)
    assert s.chosen.index == 2 and s.within_budget  # c3 is earlier but over the budget


def test_choice_when_nothing_is_detected_prefers_silence():
    s = _sweep([_cand(0, 0.9, 0.0, -4.9, True), _cand(1, 0.0, 0.0, 0.0), _cand(2, 0.5, 0.0, -2.7)])
    tn._choose(s, labelled=True, budget=1.0, pick_by_volume=False)
    assert s.chosen.index == 1


def test_choice_over_budget_takes_the_least_noisy_and_says_so():
    s = _sweep([_cand(0, 4.0, 1.0, 90, True), _cand(1, 2.0, 0.5, 50), _cand(2, 3.0, 1.0, 95)])
    tn._choose(s, labelled=True, budget=1.0, pick_by_volume=False)
    assert s.chosen.index == 1 and s.within_budget is False
    assert "NO SETTING MEETS THE BUDGET" in s.note


def test_choice_without_windows_keeps_the_configured_setting():
    s = _sweep([_cand(0, 0.5, None, None, True), _cand(1, 0.0, None, None)], windows=0)
    tn._choose(s, labelled=True, budget=1.0, pick_by_volume=False)
    assert s.chosen.configured and "recall cannot be measured" in s.note


def test_pick_by_volume_takes_the_most_alerts_within_the_budget():
    cands = [_cand(0, 0.0, None, None, True), _cand(1, 0.0, None, None), _cand(2, 0.0, None, None)]
    for c, volume in zip(cands, (1.0, 2.5, 9.0)):
        c.row, c.alerts_per_day = None, volume
    s = _sweep(cands, windows=0)
    tn._choose(s, labelled=False, budget=3.0, pick_by_volume=True)
    assert s.chosen.index == 1 and s.within_budget


# -- the tuned config file ------------------------------------------------------------------------------
def test_rewrite_keeps_comments_and_adds_missing_keys():
    text = ("engine:\n  tick_s: 5\n"
            "detectors:\n"
            "  - name: a          # first\n    type: t\n    above: 0.05      # fires above 5 %\n"
            "  - name: b\n    type: t\n    for_s: 300\n")
    out = tn.rewrite_semwatch_yaml(text, {"a": {"above": 0.1, "strict": True}, "b": {"for_s": 1.0e-5}},
                                   header="# tuned\n")
    assert out.startswith("# tuned\n")
    assert "    above: 0.1       # fires above 5 %  [tuned; was 0.05]\n" in out
    assert "    strict: true  # tuned\n" in out
    data = yaml.safe_load(out)
    assert data["detectors"][0] == {"name": "a", "type": "t", "above": 0.1, "strict": True}
    assert data["detectors"][1]["for_s"] == 1.0e-5  # a float, not the string "1e-05"
    with pytest.raises(Exception, match="no detector or rule named"):
        tn.rewrite_semwatch_yaml(text, {"zzz": {"above": 1}})


# -- end to end ------------------------------------------------------------------------------------------
def test_tune_with_labels_writes_a_loadable_config_and_a_report(data, config, tmp_path):
    d, raw, labels = data
    events = parsed(raw)
    result = tn.tune(events, config, labels, budget=BUDGET, jobs=2, detectors=SWEPT, progress=False)
    assert [s.name for s in result.sweeps] == SWEPT
    assert result.days == pytest.approx(1 / 3, abs=0.01)
    for s in result.sweeps:
        assert s.chosen is not None and s.within_budget, s.note
        assert s.chosen.fa_per_day <= BUDGET
        assert (s.chosen.row.recall or 0) >= (s.candidates[0].row.recall or 0)  # never worse than configured
    tuned_dir = tmp_path / "tuned"
    loaded = tn.write_tuned_config(CONFIG, tuned_dir, result.chosen_params())
    assert loaded.directory == tuned_dir
    tuned = {p.name: p for p in load_config(tuned_dir).detector_params}
    assert {n: tuned[n] for n in SWEPT} == result.chosen_params()
    for p in load_config(CONFIG).detector_params:  # the others: as in the source file
        assert p.name in SWEPT or tuned[p.name] == p
    for f in ("tools.yaml", "prices.yaml", "prometheus/semwatch-rules.yml"):
        assert (tuned_dir / f).read_bytes() == (CONFIG / f).read_bytes()

    report = tmp_path / "out" / "report.md"
    pngs = tn.write_report(result, report, events_path="events.jsonl", config_dir=str(CONFIG),
                           out_config=tuned_dir)
    text = report.read_text()
    assert "## Chosen settings" in text and "## Labelled windows" in text
    names = {p.name for p in pngs}
    assert {f"report-tradeoff-{n}.png" for n in SWEPT} <= names
    assert any(n.startswith("report-window-") for n in names)
    for p in pngs:
        assert p.exists() and p.stat().st_size > 10_000 and p.name in text
    loop = next(s for s in result.sweeps if s.name == "runaway-loop")
    assert loop.timeline and loop.timeline["series"][0]["points"]  # the run's steps were recorded

    # The choice holds on the tuning data when the written config is replayed as a worker would.
    replayed = replay_events(parsed(raw), only(load_config(tuned_dir), set(SWEPT)))
    kinds = {s.name: s.kind for s in result.sweeps}
    rep = evaluate(replayed.incidents, labels, detectors=kinds, days=result.days)
    for name in SWEPT:
        assert rep.row(name).false_alarms_per_day <= BUDGET
        assert rep.row(name).recall == next(s for s in result.sweeps if s.name == name).chosen.row.recall


def _cli(argv):
    parser = argparse.ArgumentParser()
    tn.add_arguments(parser)
    return tn.run(parser.parse_args(argv))


def test_cli_without_labels_prints_volumes_and_writes_no_config(data, tmp_path, capsys):
    d, _, _ = data
    out = tmp_path / "tuned"
    rc = _cli(["--events", str(d / "events.jsonl"), "--config", str(CONFIG), "--detectors",
               "wrong-entity-action", "--report", str(tmp_path / "r.md"), "--out-config", str(out),
               "--no-plots", "--no-progress", "--jobs", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "alert volume per day" in text and "wrong-entity-action" in text
    assert text.count("/day") >= 4  # one line per candidate
    assert not out.exists()
    assert "alerts/day" in (tmp_path / "r.md").read_text()

    rc = _cli(["--events", str(d / "events.jsonl"), "--config", str(CONFIG), "--detectors",
               "wrong-entity-action", "--report", str(tmp_path / "r2.md"), "--out-config", str(out),
               "--max-false-alarms-per-day", "100", "--pick-by-volume", "--no-progress", "--jobs", "1"])
    assert rc == 0
    assert "<- chosen" in capsys.readouterr().out
    load_config(out)
    assert (tmp_path / "r2-tradeoff-wrong-entity-action.png").exists()


def test_cli_refuses_labels_without_a_budget(data, tmp_path, capsys):
    d, _, _ = data
    assert _cli(["--events", str(d / "events.jsonl"), "--labels", str(d / "labels.jsonl"),
                 "--config", str(CONFIG)]) == 2
    assert "--max-false-alarms-per-day is required" in capsys.readouterr().err


def test_tuned_config_never_overwrites_its_source(tmp_path, config):
    src = tmp_path / "cfg"
    shutil.copytree(CONFIG, src)
    with pytest.raises(Exception, match="must not overwrite"):
        tn.write_tuned_config(src, src, {})
