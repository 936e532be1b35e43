"""The shared contracts: the normalized run event, the incident record and labelled windows.

Field names and meanings are fixed by DESIGN.md. Validation errors name the field (pydantic's
``loc``), so a dead-letter reason reads like ``schema: input_tokens: Input should be greater than or
equal to 0``.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SEGMENT_FIELDS_CHANGE_TRACKED = ("prompt_version", "model", "route", "provider")

KINDS = ("false_refusal_spike", "wrong_entity_action", "token_spike", "cost_spike", "threshold")
Kind = Literal["false_refusal_spike", "wrong_entity_action", "token_spike", "cost_spike", "threshold"]
Severity = Literal["SEV-1", "SEV-2", "SEV-3"]
SEVERITIES = ("SEV-1", "SEV-2", "SEV-3")

# Short strings stay short: ids and labels are bounded so one hostile record cannot blow up state.
_ID = Field(min_length=1, max_length=256)
_LABEL = Field(default=None, max_length=256)


def parse_ts(value: Any) -> float:
    """RFC 3339 string or epoch seconds -> epoch seconds (float, UTC)."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string or epoch seconds, not a boolean")
    if isinstance(value, (int, float)):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            # The value is not echoed: the detail goes to logs and DLQ headers, and may be anything.
            raise ValueError(f"not an RFC 3339 timestamp (a string of {len(value)} characters)") from None
        if parsed.tzinfo is None:
            raise ValueError("timestamp has no UTC offset; RFC 3339 requires one (e.g. 'Z')")
        ts = parsed.timestamp()
    else:
        raise ValueError("timestamp must be an RFC 3339 string or epoch seconds")
    if not math.isfinite(ts) or ts < 0 or ts > 32503680000:  # year 3000
        raise ValueError("timestamp out of range")
    return ts


def format_ts(ts: float) -> str:
    """Epoch seconds -> RFC 3339 UTC with milliseconds (``2026-01-05T10:00:00.000Z``)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=256)
    call_id: Optional[str] = Field(default=None, max_length=256)
    arguments: dict[str, Any] = Field(default_factory=dict)
    side_effect: Optional[bool] = None
    result: Any = None


class RunEvent(BaseModel):
    """One completed model call or agent-run step (DESIGN.md, "the normalized run event")."""

    # Unknown fields are kept but ignored; NaN/inf never pass as numbers.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    schema_version: Literal["1"]
    event_id: str = _ID
    run_id: str = _ID
    ts: float
    app: str = Field(min_length=1, max_length=256)
    route: Optional[str] = _LABEL
    model: str = Field(min_length=1, max_length=256)
    provider: Optional[str] = _LABEL
    prompt_version: Optional[str] = _LABEL
    tenant: Optional[str] = _LABEL
    conversation_id: Optional[str] = _LABEL
    input_tokens: Optional[int] = Field(default=None, ge=0, le=10**9)
    output_tokens: Optional[int] = Field(default=None, ge=0, le=10**9)
    cost_usd: Optional[float] = Field(default=None, ge=0, le=1e7)
    latency_s: Optional[float] = Field(default=None, ge=0, le=1e6)
    finish_reason: Optional[str] = _LABEL
    error_type: Optional[str] = _LABEL
    request_text: Optional[str] = None
    response_text: Optional[str] = None
    refusal: Optional[bool] = None
    request_flagged: Optional[bool] = None
    subject: Optional[dict[str, list[str]]] = None
    tool_calls: Optional[list[ToolCall]] = None
    feedback: Optional[dict[str, Any]] = None
    metrics: Optional[dict[str, float]] = None

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> float:
        return parse_ts(value)

    @field_validator("input_tokens", "output_tokens", mode="before")
    @classmethod
    def _whole_tokens(cls, value: Any) -> Any:
        # A token count of true or 3.5 is a producer bug, not a number to round.
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("token counts must be whole numbers")
        return value

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, value: Any) -> Any:
        # Accept a single id as shorthand for a one-element list; ids are compared as strings.
        if isinstance(value, dict):
            return {
                str(k): [str(v) for v in (vals if isinstance(vals, list) else [vals])]
                for k, vals in value.items()
            }
        return value

    def segment_value(self, field: str) -> Optional[str]:
        """A label value for grouping: top-level fields, ``metrics.x`` or ``feedback.x``."""
        if field.startswith("metrics."):
            v = (self.metrics or {}).get(field[8:])
            return None if v is None else str(v)
        value = getattr(self, field, None)
        if value is None and self.model_extra:
            value = self.model_extra.get(field)
        return None if value is None else str(value)

    def numeric(self, field: str) -> Optional[float]:
        """A numeric signal by name: a top-level field, ``metrics.x``, ``feedback.x`` or ``total_tokens``."""
        if field == "total_tokens":
            if self.input_tokens is None and self.output_tokens is None:
                return None
            return float((self.input_tokens or 0) + (self.output_tokens or 0))
        if field.startswith("metrics."):
            v = (self.metrics or {}).get(field[8:])
        elif field.startswith("feedback."):
            v = (self.feedback or {}).get(field[9:])
        else:
            v = getattr(self, field, None)
            if v is None and self.model_extra:
                v = self.model_extra.get(field)
        if isinstance(v, bool):
            return 1.0 if v else 0.0
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
        return None


class SuspectedChange(BaseModel):
    field: str
    from_: Optional[str] = Field(default=None, alias="from")
    to: Optional[str] = None
    first_seen: str

    model_config = ConfigDict(populate_by_name=True)


class Incident(BaseModel):
    """An incident trigger or resolve (DESIGN.md, "the incident record")."""

    model_config = ConfigDict(extra="forbid")

    incident_id: str
    dedup_key: str
    event_action: Literal["trigger", "resolve"]
    severity: Severity
    kind: Kind
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


def is_optional(label: Any) -> bool:
    """A labelled window marked ``"optional": true``: a real but minor condition that evaluation
    neither requires nor counts as a false alarm (see semwatch/evaluate.py).

    >>> is_optional({"kind": "threshold", "optional": True}), is_optional({"kind": "threshold"})
    (True, False)
    """
    return label.get("optional") is True


class LabelledWindow(BaseModel):
    """A labelled incident window for generate / evaluate / tune."""

    model_config = ConfigDict(extra="allow")

    kind: Kind
    start: float
    end: float
    segment: dict[str, str] = Field(default_factory=dict)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> float:
        return parse_ts(value)


def describe_validation_error(err: ValidationError, limit: int = 3) -> str:
    """``field.path: message; ...`` — short enough for a Kafka header."""
    parts = []
    for e in err.errors()[:limit]:
        loc = ".".join(str(p) for p in e.get("loc", ())) or "(record)"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(err.errors()) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)
