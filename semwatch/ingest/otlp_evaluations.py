"""OpenTelemetry GenAI evaluation results -> ``metrics`` of the run event they judge.

An evaluator (groundedness, citation accuracy, relevance ...) reports a ``gen_ai.evaluation.result``
event with ``gen_ai.evaluation.name``, ``gen_ai.evaluation.score.value`` and/or
``gen_ai.evaluation.score.label``. Read here as *span events* of a trace export:

* on a model-call span, it judges that call's event;
* on an ``invoke_agent`` span, it judges the run's answer: the model call below that agent span that
  ended last (see :func:`semwatch.ingest.otlp.spans_to_events`).

The score becomes ``metrics.<name>`` (the name lower-cased, every run of other characters than
letters, digits, ``.`` and ``-`` turned into ``_``: ``"Groundedness"`` -> ``groundedness``,
``"citation score"`` -> ``citation_score``), so any detector or rule can watch it by that field; the
label (``"grounded"``, ``"fail"``) goes to the event's extra field ``evaluation_labels``
(``{name: label}``). Explicit ``semwatch.metric.<name>`` attributes win over an evaluation of the
same name. Log-record evaluation events (the logs pipeline) are not read.

>>> evaluations([{"name": "gen_ai.evaluation.result", "attributes": {
...     "gen_ai.evaluation.name": "Groundedness", "gen_ai.evaluation.score.value": 0.42,
...     "gen_ai.evaluation.score.label": "partially grounded"}}])
({'groundedness': 0.42}, {'groundedness': 'partially grounded'})
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

EVALUATION_EVENT = "gen_ai.evaluation.result"
_NAME = "gen_ai.evaluation.name"
_SCORE = "gen_ai.evaluation.score.value"
_LABEL = "gen_ai.evaluation.score.label"
_NOT_NAME = re.compile(r"[^a-z0-9.\-]+")
MAX_NAME_CHARS = 64
MAX_LABEL_CHARS = 64


def metric_name(name: Any) -> Optional[str]:
    """The ``metrics`` key of an evaluation name, or None when nothing usable is left."""
    if not isinstance(name, str):
        return None
    key = _NOT_NAME.sub("_", name.strip().lower()).strip("_")
    return key[:MAX_NAME_CHARS] or None


def _score(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def evaluations(events: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """(scores, labels) by metric name from a span's events; a later result of a name wins."""
    scores: dict[str, float] = {}
    labels: dict[str, str] = {}
    for ev in events:
        if ev.get("name") != EVALUATION_EVENT:
            continue
        attrs = ev.get("attributes") or {}
        key = metric_name(attrs.get(_NAME))
        if key is None:
            continue
        score = _score(attrs.get(_SCORE))
        if score is not None:
            scores[key] = score
        label = attrs.get(_LABEL)
        if isinstance(label, str) and label.strip():
            labels[key] = label.strip()[:MAX_LABEL_CHARS]
    return scores, labels


def merge_into(event: dict[str, Any], scores: dict[str, float], labels: dict[str, str]) -> None:
    """Add evaluation scores to ``event["metrics"]`` (explicit metrics win) and labels to
    ``event["evaluation_labels"]``."""
    if scores:
        metrics = event.setdefault("metrics", {})
        for key, value in scores.items():
            metrics.setdefault(key, value)
    if labels:
        event.setdefault("evaluation_labels", {}).update(labels)
