"""Response KPIs: detection delay and time open as histograms, on-call false-alarm marks (command,
feedback topic record, worker counter) and ``semwatch tune --feedback``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from detectors.malformed_tool_call import MalformedToolCall
from semwatch.cli import COMMANDS
from semwatch.config import load_config
from semwatch.contract import Incident, RunEvent
from semwatch.contract.feedback import FalseAlarmMark
from semwatch.offline.evaluate import evaluate, load_feedback
from semwatch.offline.replay import replay_events
from semwatch.offline.tune import tune
from semwatch.settings import Settings
from sinks import feedback as mark_cmd
from sinks.metrics import MetricsSink, WorkerMetrics
from streams.app import SemwatchApp


def incident(action: str, detected_at: str, window_start: str = "2026-01-05T10:00:00Z", **kw) -> Incident:
    base = {"incident_id": f"i-{action}-{detected_at}", "dedup_key": "grounding-drop/abc", "event_action": action,
            "severity": "SEV-2", "kind": "grounding_drop", "detector": "grounding-drop", "summary": "s",
            "segment": {"app": "a"}, "window_start": window_start, "window_end": detected_at,
            "detected_at": detected_at}
    base.update(kw)
    return Incident.model_validate(base)


def test_detection_delay_and_time_open_are_observed_per_kind_and_severity():
    m = WorkerMetrics()
    sink = MetricsSink(m)
    sink.add(incident("trigger", "2026-01-05T10:02:00Z"))
    sink.add(incident("resolve", "2026-01-05T10:32:00Z", severity="SEV-3"))  # labelled like its trigger
    labels = {"kind": "grounding_drop", "severity": "SEV-2"}
    get = m.registry.get_sample_value
    assert get("semwatch_detection_delay_seconds_sum", labels) == 120.0
    assert get("semwatch_detection_delay_seconds_bucket", {**labels, "le": "120.0"}) == 1.0
    assert get("semwatch_incident_open_seconds_sum", labels) == 1800.0
    assert get("semwatch_incident_open_seconds_count", labels) == 1.0
    # a resolve whose trigger this process never saw is not observed
    sink.add(incident("resolve", "2026-01-05T11:00:00Z", dedup_key="grounding-drop/other"))
    assert get("semwatch_incident_open_seconds_count", labels) == 1.0


def test_false_alarms_are_counted_per_configured_detector_only():
    m = WorkerMetrics()
    m.declare_detectors(["grounding-drop", "complaint-cluster"])
    get = m.registry.get_sample_value
    assert get("semwatch_false_alarms_total", {"detector": "complaint-cluster"}) == 0.0  # exported from the start
    m.false_alarm("grounding-drop")
    m.false_alarm("made-up-by-a-forged-record")
    assert get("semwatch_false_alarms_total", {"detector": "grounding-drop"}) == 1.0
    assert get("semwatch_false_alarms_total", {"detector": "other"}) == 1.0


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mark_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_mark_false_alarm_writes_a_valid_mark(tmp_path, monkeypatch):
    assert COMMANDS["mark-false-alarm"][0] == "sinks.feedback"
    monkeypatch.delenv("SEMWATCH_BROKER_URL", raising=False)
    out = tmp_path / "marks.jsonl"
    assert mark_cmd.run(_args("--dedup-key", "complaint-cluster/0a1b", "--incident-id", "abc",
                              "--reason", "planned sale", "--by", "alice", "--file", str(out))) == 0
    record = json.loads(out.read_text())
    assert record["type"] == "false_alarm" and record["detector"] == "complaint-cluster"
    assert record["incident_id"] == "abc" and record["reason"] == "planned sale"
    # what the worker reads from the topic
    mark = SemwatchApp.read_mark(out.read_bytes().strip())
    assert isinstance(mark, FalseAlarmMark) and mark.dedup_key == "complaint-cluster/0a1b"
    assert SemwatchApp.read_mark(b'{"dedup_key": "no-slash"}') is None
    assert mark_cmd.run(_args("--dedup-key", "x/1")) == 2  # no broker, no file: says so
    assert mark_cmd.run(_args("--dedup-key", "x", "--file", str(out))) == 2


def test_the_feedback_topic_is_a_setting():
    assert Settings().topics.feedback == "semwatch.feedback"
    assert Settings(topics={"feedback": "ops.feedback"}).topics.feedback == "ops.feedback"


def test_evaluate_counts_a_marked_trigger_as_a_false_alarm_even_on_a_window():
    inc = [{"event_action": "trigger", "kind": "grounding_drop", "detector": "g", "segment": {"app": "a"},
            "detected_at": "2026-01-05T10:05:00Z", "dedup_key": "g/1"}]
    lab = [{"kind": "grounding_drop", "start": "2026-01-05T10:00:00Z", "end": "2026-01-05T10:30:00Z",
            "segment": {"app": "a"}}]
    assert evaluate(inc, lab, days=1.0).row("g").false_alarms == 0
    row = evaluate(inc, lab, days=1.0, marks=[("g/1", None)]).row("g")
    assert (row.false_alarms, row.detected) == (1, 0)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "semwatch.yaml").write_text(yaml.safe_dump({"detectors": [
        {"name": "malformed", "type": "malformed_tool_call", "min_baseline_n": 100}]}))
    return tmp_path


def test_tune_takes_marked_false_alarms_into_its_choice(config_dir, tmp_path):
    normal, anomalous = MalformedToolCall._unit_test_anomaly()
    events = [RunEvent.model_validate(e) for e in normal + anomalous]
    config = load_config(config_dir)
    (trigger,) = [i for i in replay_events(events, config).incidents if i.event_action == "trigger"]
    label = {"kind": "malformed_tool_call", "start": anomalous[0]["ts"], "end": anomalous[-1]["ts"],
             "segment": {"app": "unit-app", "route": "unit-route"}}
    plain = tune(events, config, [label], budget=5.0, jobs=1, progress=False, timelines=False)
    assert plain.sweeps[0].candidates[0].row.false_alarms == 0
    path = tmp_path / "marks.jsonl"
    path.write_text(json.dumps({"dedup_key": trigger.dedup_key, "incident_id": trigger.incident_id,
                                "marked_at": "2026-01-06T00:00:00Z"}) + "\n")
    marked = tune(events, config, [label], budget=5.0, jobs=1, progress=False, timelines=False,
                  feedback=load_feedback(path))
    configured = marked.sweeps[0].candidates[0]
    assert configured.marked == 1 and configured.row.false_alarms == 1 and configured.row.detected == 0
    assert marked.marks == 1
