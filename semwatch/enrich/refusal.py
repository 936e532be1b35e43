"""Refusal verdicts for events whose producer did not say: ``refusal`` from ``response_text``.

Producers that know (OpenAI ``message.refusal``, Anthropic ``stop_reason: "refusal"``,
``finish_reason: content_filter``, Gemini's safety finish reasons) set ``refusal`` themselves; that
is ground truth and is kept. Otherwise the learned classifier of :mod:`semwatch.enrich.refusal_model`
decides (docs/refusal-classifier.md: how it was built, on what, and how well it does where it was
not fitted).

Online learning. An event that carries both ``response_text`` and a label — the producer's
``refusal``, or a reviewer's verdict in ``feedback.refusal`` — teaches its app's correction of the
shipped model (:class:`semwatch.enrich.refusal_model.OnlineRefusalLearner`): a bounded, hashed
logistic residual that applies once ``min_labels`` labels of both kinds have come. Its state is one
:class:`RefusalLearnerState` per app in the engine's state mapping, so it is changelogged, survives
restarts, and replays identically. An app learns from its first ``max_labels`` labels, then its
correction is kept as it is (bounded CPU for producers that label every response).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from semwatch.contract import RunEvent
from semwatch.engine.state import PlainState, key_part, state_type

LEARNER_PREFIX = "__refusal_learner__|"


@state_type("refusal_learner")
@dataclass(slots=True)
class RefusalLearnerState(PlainState):
    """One app's online correction: the learner's counts and weights as plain data."""

    model_version: str = ""
    n_pos: int = 0
    n_neg: int = 0
    bias: float = 0.0
    w: dict = field(default_factory=dict)  # bucket -> weight
    g2: dict = field(default_factory=dict)  # bucket -> AdaGrad accumulator


def reviewer_label(event: RunEvent) -> Optional[bool]:
    """A human or producer verdict on whether the response declined: ``feedback.refusal``, else the
    producer's own ``refusal``."""
    verdict = (event.feedback or {}).get("refusal")
    if isinstance(verdict, bool):
        return verdict
    return event.refusal


class RefusalVerdict:
    """Enrichment step: ``refusal`` from the classifier when the event has text but no verdict;
    labelled events teach their app's correction (when a state store is given)."""

    name = "refusal"
    stateful = True

    def __init__(self, is_refusal: Optional[Callable[[str], bool]] = None, *, learn_online: bool = True,
                 max_labels: int = 2000):
        self._is_refusal = is_refusal  # a fixed classifier (tests, benches): no online learning
        self.learn_online = learn_online and is_refusal is None
        self.max_labels = max_labels
        self._learners: dict[str, Any] = {}  # app -> (its state object, a learner bound to it)

    def _learner(self, app: str, store: Any, create: bool) -> Any:
        from semwatch.enrich.refusal_model import OnlineRefusalLearner, get_model

        key = LEARNER_PREFIX + key_part(app)
        st = store.get(key)
        if st is None:
            if not create:
                return None
            st = RefusalLearnerState(model_version=str(get_model().meta.get("version", "")))
            store.put(key, st)
        cached = self._learners.get(app)
        if cached is not None and cached[0] is st:
            return cached[1]
        learner = OnlineRefusalLearner(get_model())
        if st.model_version != str(learner.model.meta.get("version", "")):
            # Learnt on another model version: a correction only means something relative to its
            # base model, so this app starts afresh.
            st.model_version, st.n_pos, st.n_neg, st.bias, st.w, st.g2 = (
                str(learner.model.meta.get("version", "")), 0, 0, 0.0, {}, {})
        learner.w, learner.g2 = st.w, st.g2  # the learner updates the state's own dicts
        learner.n_pos, learner.n_neg, learner.bias = st.n_pos, st.n_neg, st.bias
        if len(self._learners) > 10000:
            self._learners.clear()
        self._learners[app] = (st, learner)
        return learner

    def fill(self, event: RunEvent, store: Any = None) -> Optional[dict[str, Any]]:
        text = event.response_text
        if not text:
            return None
        if self._is_refusal is not None:
            return None if event.refusal is not None else {"refusal": self._is_refusal(text)}
        online = self.learn_online and store is not None
        label = reviewer_label(event)
        if label is not None:
            if online:
                learner = self._learner(event.app, store, create=True)
                if learner.n_labels < self.max_labels:
                    learner.learn(text, label)
                    st = self._learners[event.app][0]
                    st.n_pos, st.n_neg, st.bias = learner.n_pos, learner.n_neg, learner.bias
                    st.w, st.g2 = learner.w, learner.g2  # eviction may have replaced the dicts
                    store.put(LEARNER_PREFIX + key_part(event.app), st)
            return None if event.refusal is not None else {"refusal": label}
        learner = self._learner(event.app, store, create=False) if online else None
        if learner is not None and learner.active:
            return {"refusal": learner.is_refusal(text)}
        from semwatch.enrich.refusal_model import is_refusal

        return {"refusal": is_refusal(text)}
