"""The incident record (docs/contracts.md): a trigger or resolve on ``semwatch.incidents``.

Compatible in spirit with PagerDuty Events API v2 (``event_action``, ``dedup_key``, ``severity``).
``kind`` is open: a detector declares its own (see :data:`KIND_PATTERN`); the built-in kinds are
listed in :data:`BUILTIN_KINDS` for documentation and dashboards.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

BUILTIN_KINDS = ("false_refusal_spike", "wrong_entity_action", "token_spike", "cost_spike", "threshold")
#: A kind is a short snake_case word: it becomes a Prometheus label value and an Alertmanager label.
KIND_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
Severity = Literal["SEV-1", "SEV-2", "SEV-3"]
SEVERITIES = ("SEV-1", "SEV-2", "SEV-3")


class SuspectedChange(BaseModel):
    field: str
    from_: Optional[str] = Field(default=None, alias="from")
    to: Optional[str] = None
    first_seen: str

    model_config = ConfigDict(populate_by_name=True)


class Incident(BaseModel):
    """An incident trigger or resolve (docs/contracts.md)."""

    model_config = ConfigDict(extra="forbid")

    incident_id: str
    dedup_key: str
    event_action: Literal["trigger", "resolve"]
    severity: Severity
    kind: str = Field(pattern=KIND_PATTERN)
    detector: str
    summary: str
    segment: dict[str, str]
    observed: Optional[float] = None
    baseline: Optional[float] = None
    threshold: Optional[float] = None
    score: Optional[float] = None
    window_start: str
    window_end: str
    detected_at: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    suspected_changes: list[SuspectedChange] = Field(default_factory=list)
    runbook_url: Optional[str] = None
    # The problem this incident belongs to (docs/contracts.md): incidents of overlapping scope and
    # time share one group_key, which pagers page once; related lists the other members' dedup_keys.
    group_key: Optional[str] = None
    related: list[str] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def incident_id_for(dedup_key: str, event_action: str, detected_at: float) -> str:
    """Deterministic id: replay and the worker give the same incident the same id."""
    raw = f"{dedup_key}|{event_action}|{detected_at:.3f}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def dedup_key_for(detector: str, segment: dict[str, str], extra: str = "") -> str:
    """Stable key for one ongoing problem: detector + segment (+ e.g. a run id)."""
    body = ",".join(f"{k}={segment[k]}" for k in sorted(segment))
    if extra:
        body += f"|{extra}"
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    return f"{detector}/{digest}"
