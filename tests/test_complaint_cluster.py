"""complaint_cluster: a burst of negative feedback on one workflow, judged against its own baseline,
named by the themes of the complaint texts (redacted, deterministic)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from detectors.complaint_cluster import ComplaintCluster, ComplaintClusterParams, polarity, themes
from semwatch.config import load_config
from semwatch.contract import RunEvent, parse_ts
from semwatch.engine.detector import DetectorEnv
from tests.support import replay_one

REPO = Path(__file__).resolve().parent.parent
T0 = 1_767_600_000.0
BACKGROUND = ["answer was slow", "not helpful at all", "too long, did not read", "it did not understand me",
              "replied in the wrong language", "asked me the same thing twice"]
REFUND = ["the refund amount is wrong", "refund amount wrong, I paid 40 not 25", "you refunded the wrong amount",
          "wrong refund amount again", "refund amount is wrong!! call me at +1 415 555 0132",
          "the refund amount is wrong, mail jane.doe@example.com"]
CANCEL = ["I cannot cancel my order", "cannot cancel order", "it says cannot cancel the order"]


@pytest.mark.parametrize("feedback, expected", [
    ({"thumbs_down": True}, True), ({"complaint": True}, True), ({"complaint": "late again"}, True),
    ({"escalated": True}, True), ({"escalated_to_human": True}, True), ({"rating": 2}, True),
    ({"rating": 4}, False), ({"thumbs_up": True}, False), ({"thumbs_down": False}, False),
    ({"comment": "hm"}, None), (None, None), ({}, None),
])
def test_polarity(feedback, expected):
    assert polarity(feedback, 2.0) is expected


def test_themes_group_paraphrases_and_name_them_deterministically():
    window = REFUND * 2 + CANCEL + BACKGROUND[:2]
    first = themes(window, BACKGROUND * 3, 3, 3)
    assert [(t["theme"], t["count"]) for t in first][:2] == [("refund amount wrong", 12), ("cannot cancel", 3)] \
        or [t["theme"] for t in first][:1] == ["refund amount wrong"]
    assert first == themes(window, BACKGROUND * 3, 3, 3)
    assert themes(["one", "two"], [], 3, 3) == []  # too few to name anything


def answers(start: float, seconds: float, per_s: float, seed: int, *, route: str = "billing",
            complaints: list[str] | None = None, complaint_share: float = 0.0, id0: int = 0) -> list[dict]:
    """Answered chat turns; 2 % thumbs-down with everyday grumbles, 2.5 % thumbs-up; a share of
    turns with a complaint from ``complaints``."""
    rng = random.Random(seed)
    out, t, i = [], start, id0
    while True:
        t += rng.expovariate(per_s)
        if t >= start + seconds:
            return out
        x = rng.random()
        feedback = None
        if x < complaint_share:
            feedback = {"thumbs_down": True, "comment": rng.choice(complaints)}
        elif x < complaint_share + 0.02:
            feedback = {"thumbs_down": True, "comment": rng.choice(BACKGROUND)} if rng.random() < 0.6 \
                else {"thumbs_down": True}
        elif x < complaint_share + 0.045:
            feedback = {"thumbs_up": True}
        ev = {"schema_version": "1", "event_id": f"e{i}", "run_id": f"r{i}", "ts": t, "app": "support-bot",
              "route": route, "model": "m", "conversation_id": f"c{i}", "response_text": "Sure.",
              "finish_reason": "stop"}
        if feedback:
            ev["feedback"] = feedback
        out.append(ev)
        i += 1


def run(events: list[dict], **params) -> list:
    return replay_one(ComplaintCluster, {"name": "complaints", **params}, events)


@pytest.mark.parametrize("params", [{"among": "feedback"},
                                    {"among": "answers", "min_increase": 0.03, "min_ratio": 2.0,
                                     "clear_increase": 0.015, "prior_rate": 0.03}])
def test_a_complaint_burst_on_one_route_pages_once_with_its_themes(params):
    onset = T0 + 6 * 3600
    events = (answers(T0, 8 * 3600, 0.5, 1) + answers(T0, 8 * 3600, 0.5, 2, route="orders", id0=10**6)
              + answers(onset, 1800, 0.5, 3, complaints=REFUND, complaint_share=0.08, id0=2 * 10**6))
    out = run(events, **params)
    triggers = [i for i in out if i.event_action == "trigger"]
    assert len(triggers) == 1, [i.summary for i in out]
    inc = triggers[0]
    assert inc.kind == "complaint_cluster" and inc.segment == {"app": "support-bot", "route": "billing"}
    assert 0 <= parse_ts(inc.detected_at) - onset <= 15 * 60  # the thumbs-down rule took 35 min
    assert "themes: refund amount wrong (" in inc.summary
    blob = json.dumps(inc.to_dict())
    assert "jane.doe@example.com" not in blob and "555 0132" not in blob  # redacted on the way in
    assert inc.evidence["themes"][0]["theme"] == "refund amount wrong"


def test_everyday_feedback_does_not_page():
    assert run(answers(T0, 24 * 3600, 0.5, 4)) == []


def test_complaint_texts_in_state_are_bounded_and_redacted():
    p = ComplaintClusterParams(name="c", max_texts=5)
    det = ComplaintCluster(p, DetectorEnv())
    st = det._new_state()
    for i in range(20):
        ev = RunEvent.model_validate({"schema_version": "1", "event_id": f"e{i}", "run_id": "r", "ts": T0 + i,
                                      "app": "a", "model": "m",
                                      "feedback": {"thumbs_down": True, "comment": f"mail me at x{i}@example.com"}})
        assert det.hit(ev, st, None) is True
    assert len(st.texts) == 5 and all("[email]" in t for _, t in st.texts)


def test_the_shipped_config_retires_the_thumbs_down_rule_for_it():
    config = load_config(REPO / "config")
    names = {p.name: p for p in config.detector_params}
    assert "thumbs-down-rate" not in names
    (p,) = [p for p in config.detector_params if p.type == "complaint_cluster"]
    assert p.group_by == ("app", "route")
