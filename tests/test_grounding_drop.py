"""grounding_drop: answers scored below a segment's own low line of groundedness, far more often than
usual; OpenTelemetry evaluation events become the event's metrics."""

from __future__ import annotations

import random
from pathlib import Path

from detectors.grounding_drop import GroundingDrop
from semwatch.config import load_config
from semwatch.contract import parse_ts
from semwatch.ingest.otlp import spans_to_events
from tests.support import replay_one
from tests.test_otel import chat, export_of, span, validate

REPO = Path(__file__).resolve().parent.parent
T0 = 1_767_600_000.0


def evaluation(name, score=None, label=None) -> dict:
    attrs = [{"key": "gen_ai.evaluation.name", "value": {"stringValue": name}}]
    if score is not None:
        attrs.append({"key": "gen_ai.evaluation.score.value", "value": {"doubleValue": score}})
    if label is not None:
        attrs.append({"key": "gen_ai.evaluation.score.label", "value": {"stringValue": label}})
    return {"name": "gen_ai.evaluation.result", "timeUnixNano": "1", "attributes": attrs}


def test_otel_evaluation_events_become_metrics_of_the_judged_call():
    events, rejected = spans_to_events(export_of(chat(
        "a000000000000001", 0, 1, semwatch__metric__groundedness=0.99,
        events=[evaluation("Groundedness", 0.42, "partially grounded"), evaluation("Citation Score", 0.8),
                evaluation("Relevance", label="relevant")])))
    (ev,) = events
    assert rejected == []
    # an explicit semwatch.metric wins over an evaluation of the same name
    assert ev["metrics"] == {"groundedness": 0.99, "citation_score": 0.8}
    assert ev["evaluation_labels"] == {"groundedness": "partially grounded", "relevance": "relevant"}
    validate(ev)


def test_evaluations_on_the_agent_span_judge_the_runs_last_answer():
    agent = span("c000000000000001", 0, 10, name="invoke_agent research", gen_ai__operation__name="invoke_agent",
                 events=[evaluation("groundedness", "0.31")])
    events, _ = spans_to_events(export_of(agent, chat("a000000000000001", 1, 2, parent="c000000000000001"),
                                          chat("a000000000000002", 3, 9, parent="c000000000000001")))
    by_id = {e["event_id"].split(":")[1]: e for e in events}
    assert "metrics" not in by_id["a000000000000001"]
    assert by_id["a000000000000002"]["metrics"] == {"groundedness": 0.31}


def scored(start: float, seconds: float, per_s: float, seed: int, mean: float, sd: float, *,
           id0: int = 0, route: str = "deep-research", field: str = "groundedness") -> list[dict]:
    rng = random.Random(seed)
    out, t, i = [], start, id0
    while True:
        t += rng.expovariate(per_s)
        if t >= start + seconds:
            return out
        score = round(min(1.0, max(0.0, rng.gauss(mean, sd))), 3)
        out.append({"schema_version": "1", "event_id": f"e{i}", "run_id": f"r{i}", "ts": t,
                    "app": "research-agent", "route": route, "model": "m", "conversation_id": f"c{i}",
                    "metrics": {field: score}})
        i += 1


def run(events: list[dict], **params) -> list:
    return replay_one(GroundingDrop, {"name": "grounding", **params}, events)


def test_a_drop_after_a_retrieval_change_is_found_against_the_segments_own_scale():
    onset = T0 + 4 * 3600
    # one route scores ~0.9, another ~0.6 by nature: no fixed threshold fits both
    events = (scored(T0, 6 * 3600, 0.05, 1, 0.9, 0.04) + scored(T0, 6 * 3600, 0.05, 2, 0.6, 0.08, id0=10**6,
                                                                 route="quick-answer", field="citation_score")
              + [e for e in scored(onset, 3600, 0.05, 3, 0.78, 0.06, id0=2 * 10**6)])
    events = [e for e in events if not (e["route"] == "deep-research" and onset <= e["ts"] < onset + 3600
                                        and e["event_id"].startswith("e") and int(e["event_id"][1:]) < 10**6)]
    out = run(events)
    triggers = [i for i in out if i.event_action == "trigger"]
    assert len(triggers) == 1, [i.summary for i in out]
    inc = triggers[0]
    assert inc.kind == "grounding_drop" and inc.segment == {"app": "research-agent", "route": "deep-research"}
    assert 0 <= parse_ts(inc.detected_at) - onset <= 20 * 60
    assert inc.evidence["usual_median"] > 0.85 > inc.evidence["low_line"]
    assert inc.evidence["mean_since_onset"] < inc.evidence["usual_median"] - 0.02


def test_varied_but_steady_scores_do_not_page():
    events = scored(T0, 24 * 3600, 0.05, 5, 0.85, 0.1) + scored(T0, 24 * 3600, 0.05, 6, 0.55, 0.15,
                                                                 id0=10**6, route="other")
    assert run(events) == []


def test_the_shipped_config_watches_both_scores():
    config = load_config(REPO / "config")
    (p,) = [p for p in config.detector_params if p.type == "grounding_drop"]
    assert set(p.fields) == {"metrics.groundedness", "metrics.citation_score"}
