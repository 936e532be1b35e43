"""``complaint_cluster``: users of one workflow complain far more than usual, and about what.

Negative feedback is a thumbs-down, a complaint, an escalation to a human or a low rating
(``feedback.thumbs_down``, ``feedback.complaint``, ``feedback.escalated`` / ``escalation`` /
``escalated_to_human``, ``feedback.rating <= low_rating``); a thumbs-up or a higher rating is
positive. The statistic is the share of negative feedback per workflow (``app, route``), judged
by the sequential share test of :mod:`semwatch.engine.share` against the workflow's own learnt
share, with its minimum volume (``min_hits`` complaints from ``min_runs`` conversations). What
the share is taken over (``among``):

* ``feedback`` (default): events that carry feedback with a polarity. Right where users give both
  thumbs; useless where a product only collects complaints (the share is then always 100 %);
* ``answers``: answered events (a response, or a ``stop``-like finish) and events with feedback:
  the complaint rate per answer, for products that only collect negative feedback.

When feedback carries text (``feedback.comment``, ``feedback.text``, or ``complaint`` as text), the
incident names the top **themes** of the complaints since the rise began: the texts are redacted
(:func:`semwatch.contract.redact`) and cut to ``text_chars`` when they enter the state (a bounded
list of the segment's last ``max_texts`` complaint texts; raw text is never kept), and at the
trigger they are vectorised with TF-IDF (scikit-learn, phrases of one to three words without function words;
the inverse document frequency comes from the older complaints in the list too, so the usual
grumbling weighs less) and grouped by average-linkage agglomerative clustering on cosine distance
(deterministic: no random start). Each group is named by the longest phrase that half of its
texts share (else its two heaviest words), so the summary reads like "refund amount wrong (14),
cannot cancel order (6)".

>>> [t["theme"] for t in themes(["the refund amount is wrong", "refund amount wrong again",
...                              "wrong refund amount!!", "cannot cancel my order", "I cannot cancel the order",
...                              "cannot cancel order"], [], 3, 2)]
['refund amount wrong', 'cannot cancel order']
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pydantic import Field

from semwatch.contract import RunEvent, redact
from semwatch.engine.detector import Context, register, unit_event
from semwatch.engine.share import ShareParams, ShareSpikeDetector, ShareState
from semwatch.engine.state import state_type

ANSWERED = frozenset({"stop", "end_turn", "STOP", "stop_sequence", "completed"})
_ESCALATION_KEYS = ("escalated", "escalation", "escalated_to_human", "handoff")
_TEXT_KEYS = ("comment", "text", "complaint")
# What redaction put in ("[email]", "[secret]") says nothing about the complaint.
_REDACTED = re.compile(r"\[(?:email|phone|secret|number)\]")
# Function words only: scikit-learn's English list also drops "amount", "bill", "cannot", "call",
# "find", "show" ... which are what complaints are about.
STOP_WORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have
having he her here hers him his how i if in into is it its itself just me more most my myself no nor not now of off
on once only or other our ours out over own same she should so some such than that the their theirs them then there
these they this those through to too under until up very was we were what when where which while who whom why will
with would you your yours yourself please hi hello thanks thank again still really just im ive dont didnt""".split())


class ComplaintClusterParams(ShareParams):
    type: str = "complaint_cluster"
    group_by: tuple[str, ...] = ("app", "route")
    severity: str = Field(default="SEV-3", pattern=r"^SEV-[123]$")
    # What the share is taken over: events with feedback, or answered events (see the docstring).
    among: Literal["feedback", "answers"] = "feedback"
    # A rating at or below this is negative feedback (1..5 stars: 2).
    low_rating: float = 2.0
    # Material: the negative share must rise by 15 points ... (raise: fewer, later pages; with
    # among: answers the share is a few percent: use a few points, e.g. 0.03, and min_ratio 2)
    min_increase: float = Field(default=0.15, gt=0, lt=1)
    # ... and to 1.3 x the baseline (feedback is often half negative already).
    min_ratio: float = Field(default=1.3, ge=1)
    clear_increase: float = Field(default=0.075, ge=0, lt=1)
    prior_rate: float = Field(default=0.3, gt=0, lt=1)
    prior_strength: float = Field(default=50.0, gt=0)
    # Feedback is sparse: judge once 100 have been learnt.
    min_baseline_n: float = Field(default=100.0, ge=0)
    # Complaints, from this many conversations, since the rise began.
    min_hits: int = Field(default=6, ge=1)
    min_runs: int = Field(default=4, ge=1, le=64)
    # Complaint texts kept per segment (redacted, cut to text_chars) for the themes.
    max_texts: int = Field(default=120, ge=0, le=1000)
    text_chars: int = Field(default=160, ge=20, le=1000)
    # Themes named in the incident, each shared by at least min_theme_size complaints.
    max_themes: int = Field(default=3, ge=0, le=10)
    min_theme_size: int = Field(default=3, ge=2)


@state_type("complaint_cluster")
@dataclass(slots=True)
class ComplaintState(ShareState):
    texts: list = field(default_factory=list)  # [ts, redacted text] of recent complaints, oldest first


def polarity(feedback: Optional[dict], low_rating: float) -> Optional[bool]:
    """True: negative feedback; False: positive; None: no feedback with a polarity.

    >>> polarity({"rating": 1}, 2.0), polarity({"thumbs_up": True}, 2.0), polarity({"comment": "hm"}, 2.0)
    (True, False, None)
    """
    if not feedback:
        return None
    if feedback.get("thumbs_down") is True or _truthy_text(feedback.get("complaint")):
        return True
    if any(feedback.get(k) is True for k in _ESCALATION_KEYS):
        return True
    rating = feedback.get("rating")
    if isinstance(rating, (int, float)) and not isinstance(rating, bool) and math.isfinite(rating):
        return rating <= low_rating
    if feedback.get("thumbs_up") is True or feedback.get("thumbs_down") is False:
        return False
    return None


def _truthy_text(value: Any) -> bool:
    return value is True or (isinstance(value, str) and bool(value.strip()))


def complaint_text(feedback: dict) -> Optional[str]:
    for key in _TEXT_KEYS:
        value = feedback.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def themes(window: list[str], background: list[str], max_themes: int, min_size: int) -> list[dict]:
    """The main themes of ``window`` (complaint texts), largest first: ``{theme, count, example}``.

    ``background`` (older complaints) only sharpens the inverse document frequencies.
    """
    if max_themes <= 0 or len(window) < min_size:
        return []
    import numpy as np
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(stop_words=sorted(STOP_WORDS), ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                          preprocessor=lambda text: _REDACTED.sub(" ", text.lower()),
                          token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", max_features=5000)
    try:
        vec.fit(window + background)
    except ValueError:  # no term shared by two texts
        return []
    x = vec.transform(window)
    keep = np.flatnonzero(x.getnnz(axis=1))
    if len(keep) < min_size:
        return []
    x = x[keep]
    if len(keep) == 1:
        labels = np.zeros(1, dtype=int)
    else:
        labels = AgglomerativeClustering(n_clusters=None, distance_threshold=0.85, metric="cosine",
                                         linkage="average").fit_predict(x.toarray())
    terms = vec.get_feature_names_out()
    present = (x > 0).toarray()
    out = []
    for c in sorted(set(labels.tolist()), key=lambda c: (-int((labels == c).sum()), c)):
        members = np.flatnonzero(labels == c)
        if len(members) < min_size:
            continue
        share = present[members].mean(axis=0)
        weight = np.asarray(x[members].mean(axis=0)).ravel()
        common = [i for i in np.flatnonzero(share >= 0.5)]
        if common:  # the longest phrase half the group shares, the heaviest among equals
            best = max(common, key=lambda i: (len(terms[i].split()), weight[i], -i))
            label = str(terms[best])
        else:
            top = np.argsort(-weight, kind="stable")[:2]
            label = " ".join(str(terms[i]) for i in top)
        out.append({"theme": label, "count": int(len(members)), "example": window[int(keep[members[0]])]})
        if len(out) >= max_themes:
            break
    return out


@register
class ComplaintCluster(ShareSpikeDetector):
    """A rise in a workflow's share of negative feedback, with the themes of the complaints."""

    type_name = "complaint_cluster"
    kind = "complaint_cluster"
    Params = ComplaintClusterParams
    params: ComplaintClusterParams
    what = "negative"
    tuning_space = {"min_increase": [0.10, 0.15, 0.25], "false_alarm_days": [30.0, 90.0, 365.0]}

    @property
    def unit(self) -> str:  # type: ignore[override]
        return "feedback" if self.params.among == "feedback" else "answers"

    def _new_state(self) -> ComplaintState:
        return ComplaintState(segment={})

    def hit(self, event: RunEvent, st: ShareState, ctx: Context) -> Optional[bool]:
        p = self.params
        negative = polarity(event.feedback, p.low_rating)
        if p.among == "answers":
            answered = event.error_type is None and (event.response_text is not None
                                                     or event.finish_reason in ANSWERED)
            if negative is None and not answered:
                return None
            negative = bool(negative)
        if negative is None:
            return None
        if negative and p.max_texts and isinstance(st, ComplaintState):
            text = complaint_text(event.feedback or {})
            if text is not None:
                st.texts.append([event.ts, redact(text, p.text_chars)])
                del st.texts[:-p.max_texts]
        return negative

    def detail(self, event: RunEvent, st: ShareState) -> str:
        text = complaint_text(event.feedback or {})
        return redact(text, 80) if text else ""

    def _themes(self, st: ShareState) -> list[dict]:
        texts = getattr(st, "texts", [])
        window = [t for ts, t in texts if ts >= st.onset]
        background = [t for ts, t in texts if ts < st.onset]
        return themes(window, background, self.params.max_themes, self.params.min_theme_size)

    def extra_evidence(self, st: ShareState) -> dict[str, Any]:
        return {"themes": self._themes(st)}

    def describe(self, st: ShareState, rate: float, p0: float, action: str) -> str:
        text = super().describe(st, rate, p0, action)
        if action == "trigger":
            found = self._themes(st)
            if found:
                text += "; themes: " + ", ".join(f"{t['theme']} ({t['count']})" for t in found)
        return text

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"min_baseline_n": 60}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        """Feedback on a fifth of the answers, 40 % of it negative; then complaints about refunds."""
        t0 = 1_767_600_000.0
        grumbles = ["slow answer", "not helpful", "too long", "did not understand me", "wrong language"]

        def answer(i: int, ts: float, complaint: Optional[str], prefix: str) -> dict:
            feedback = None
            if complaint is not None:
                feedback = {"thumbs_down": True, "comment": complaint}
            elif i % 5 == 0:
                feedback = {"thumbs_up": True} if i % 25 < 15 else {"thumbs_down": True,
                                                                      "comment": grumbles[i % 5]}
            return unit_event(f"{prefix}{i}", f"r{prefix}{i}", ts, response_text="done", finish_reason="stop",
                              conversation_id=f"c{prefix}{i}", **({"feedback": feedback} if feedback else {}))

        normal = [answer(i, t0 + 10.0 * i, None, "n") for i in range(3000)]
        anomalous = [answer(i, t0 + 30000 + 10.0 * i, "the refund amount is wrong" if i % 2 else None, "a")
                     for i in range(120)]
        return normal, anomalous
