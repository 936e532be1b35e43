"""Online learning of the refusal classifier per app, inside the engine (semwatch/enrich/refusal.py)."""

from __future__ import annotations

from semwatch.contract import RunEvent
from semwatch.engine.core import Engine
from semwatch.enrich import Enrichment
from semwatch.enrich.refusal import LEARNER_PREFIX, RefusalLearnerState, RefusalVerdict
from semwatch.enrich.refusal_model import is_refusal
from streams import state_codec

T0 = 1_767_600_000.0
# An app's own way of declining that the shipped model does not know.
TEMPLATE = "Ticket {i}: this request falls under policy 7.3 and has been closed without action."
ANSWER = "Ticket {i}: your new address is saved and the courier has been told."


def event(i: int, app: str, text: str, **extra) -> RunEvent:
    return RunEvent.model_validate({"schema_version": "1", "event_id": f"{app}-{i}", "run_id": f"r{i}",
                                    "ts": T0 + i, "app": app, "model": "m", "response_text": text, **extra})


def verdicts(engine: Engine, events: list[RunEvent]) -> list:
    seen = []
    original = engine.enrich

    def spy(ev, store=None):
        out = original(ev, store)
        seen.append(out.refusal)
        return out

    engine.enrich = spy
    for ev in events:
        engine.process(ev)
    engine.enrich = original
    return seen


def labelled(app: str, n: int, start: int = 0) -> list[RunEvent]:
    out = []
    for i in range(start, start + n):
        refused = i % 2 == 0
        out.append(event(i, app, (TEMPLATE if refused else ANSWER).format(i=i), refusal=refused))
    return out


def test_labelled_events_teach_their_app_and_only_their_app():
    assert not is_refusal(TEMPLATE.format(i=999))  # the shipped model misses this app's declines
    engine = Engine([], enrich=Enrichment([RefusalVerdict()]))
    verdicts(engine, labelled("billing-bot", 200))
    unlabelled = [event(1000 + i, "billing-bot", TEMPLATE.format(i=1000 + i)) for i in range(20)]
    assert all(verdicts(engine, unlabelled))  # learnt
    other = [event(2000 + i, "other-bot", TEMPLATE.format(i=2000 + i)) for i in range(20)]
    assert not any(verdicts(engine, other))  # another app keeps the shipped model
    answers = [event(3000 + i, "billing-bot", ANSWER.format(i=3000 + i)) for i in range(20)]
    assert not any(verdicts(engine, answers))


def test_a_reviewer_verdict_in_feedback_teaches_too():
    engine = Engine([], enrich=Enrichment([RefusalVerdict()]))
    reviewed = [event(i, "a", (TEMPLATE if i % 2 == 0 else ANSWER).format(i=i),
                      feedback={"refusal": i % 2 == 0}) for i in range(200)]
    seen = verdicts(engine, reviewed)
    assert seen == [i % 2 == 0 for i in range(200)]  # the reviewer's verdict is the event's verdict
    assert verdicts(engine, [event(500, "a", TEMPLATE.format(i=500))]) == [True]


def test_the_correction_survives_a_restart_from_the_changelog_and_replays_identically():
    first = Engine([], enrich=Enrichment([RefusalVerdict()]))
    verdicts(first, labelled("a", 120))
    key = LEARNER_PREFIX + "a"
    assert isinstance(first.data[key], RefusalLearnerState) and key in first.dirty
    restored = {k: state_codec.loads(state_codec.dumps(v)) for k, v in first.data.items()}
    second = Engine([], data=restored, enrich=Enrichment([RefusalVerdict()]))
    tail = labelled("a", 80, start=120) + [event(900 + i, "a", TEMPLATE.format(i=900 + i)) for i in range(10)]
    straight = Engine([], enrich=Enrichment([RefusalVerdict()]))
    verdicts(straight, labelled("a", 120))
    assert verdicts(second, tail) == verdicts(straight, tail)
    assert second.data[key].w == straight.data[key].w


def test_learning_stops_at_max_labels_and_memory_stays_bounded():
    engine = Engine([], enrich=Enrichment([RefusalVerdict(max_labels=50)]))
    verdicts(engine, labelled("a", 300))
    st = engine.data[LEARNER_PREFIX + "a"]
    assert st.n_pos + st.n_neg == 50 and len(st.w) <= 4096
