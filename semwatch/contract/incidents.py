"""The incident record (docs/contracts.md): a trigger or resolve on ``semwatch.incidents``.

Compatible in spirit with PagerDuty Events API v2 (``event_action``, ``dedup_key``, ``severity``).
``kind`` is open: a detector declares its own (see :data:`KIND_PATTERN`); the built-in kinds are
listed in :data:`BUILTIN_KINDS` for documentation and dashboards.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

BUILTIN_KINDS = ("false_refusal_spike", "wrong_entity_action", "token_spike", "cost_spike", "threshold",
                 "malformed_tool_call", "complaint_cluster", "grounding_drop")
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


class Containment(BaseModel):
    """What to roll back: the suspected change that best explains the incident (by timing and scope).

    ``summary`` reads like "roll back prompt_version v8 -> v7 on support-bot/billing (changed 3 min
    before the spike)"; ``current`` is the value the change brought, ``rollback_to`` the one it
    replaced, ``scope`` where the change was seen (``{app, route}`` or ``{app}``), ``lead_s`` how long
    before the incident window it came (negative: just after its start), ``rank_score`` how well it
    explains the incident (0..1), ``alternatives`` how many other suspected changes were ranked below.
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["roll_back"] = "roll_back"
    field: str
    current: Optional[str] = None
    rollback_to: Optional[str] = None
    scope: dict[str, str] = Field(default_factory=dict)
    changed_at: str
    lead_s: float
    rank_score: float
    alternatives: int = 0
    summary: str


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
    # The rollback target among suspected_changes (triggers only; null when nothing changed).
    containment: Optional[Containment] = None
    runbook_url: Optional[str] = None
    # The problem this incident belongs to: incidents of overlapping scope and time share one
    # group_key (set by the engine), and pagers page once per problem. None: a problem of its own.
    group_key: Optional[str] = None
    # dedup_keys of the other incidents of the same problem.
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
