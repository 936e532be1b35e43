"""The normalized run event: one completed model call or agent-run step (docs/contracts.md).

Field names follow the OpenTelemetry GenAI semantic conventions where one exists. Validation errors
name the field (pydantic's ``loc``), so a dead-letter reason reads like ``schema: input_tokens: Input
should be greater than or equal to 0``.
"""

from __future__ import annotations

import json
import math
import types
from typing import Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from semwatch.contract.times import parse_ts

#: Bounds on what one event may carry into state; beyond them it is dead-lettered as ``oversized``.
MAX_SUBJECT_TYPES = 32
MAX_SUBJECT_IDS = 1000
MAX_ID_CHARS = 256
MAX_TOOL_CALLS = 256
#: Marks a validation error as a size bound (the validate stage dead-letters it as ``oversized``).
OVERSIZED = "oversized"

# Short strings stay short: ids and labels are bounded so one hostile record cannot blow up state.
_ID = Field(min_length=1, max_length=256)
_LABEL = Field(default=None, max_length=256)


#: How much of an unusable ``arguments`` text a call keeps (for the evidence, redacted there).
MAX_RAW_ARGUMENTS = 1024


class ToolCall(BaseModel):
    """One tool call. ``arguments`` may arrive as an object or as JSON text (OpenTelemetry carries
    ``gen_ai.tool.call.arguments`` as a string): text that parses to an object is used as the object;
    anything else leaves ``arguments`` empty, keeps the text in ``arguments_raw`` (at most
    :data:`MAX_RAW_ARGUMENTS` characters) and says why in ``arguments_error``. Such a call is a
    malformed call to count, never a reason to refuse the event.

    >>> call = ToolCall(name="cancel_order", arguments='{"order_id": "#W1", "reason": ')
    >>> (call.arguments, call.arguments_error, call.arguments_raw[:12])
    ({}, 'not valid JSON (Expecting value at char 30)', '{"order_id":')
    >>> ToolCall(name="get_order", arguments='{"order_id": "#W1"}').arguments
    {'order_id': '#W1'}
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=256)
    call_id: Optional[str] = Field(default=None, max_length=256)
    arguments: dict[str, Any] = Field(default_factory=dict)
    # Set only when the producer's arguments were unusable: why, and the text as it came (bounded).
    arguments_error: Optional[str] = Field(default=None, max_length=256)
    arguments_raw: Optional[str] = Field(default=None, max_length=MAX_RAW_ARGUMENTS)
    side_effect: Optional[bool] = None
    result: Any = None
    # The tool failed (``error.type`` of an OTel execute_tool span).
    error_type: Optional[str] = Field(default=None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _arguments_as_text(cls, data: Any) -> Any:
        if not isinstance(data, dict) or isinstance(data.get("arguments", {}), dict):
            return data
        raw = data["arguments"]
        data = dict(data)
        if raw is None:
            data["arguments"], data["arguments_error"], data["arguments_raw"] = {}, "arguments is null", "null"
            return data
        parsed, error = raw, None
        if isinstance(raw, str):
            text = raw
            try:
                # NaN/Infinity are not JSON: read as null, as the OTLP adapter does.
                parsed = json.loads(raw, parse_constant=lambda _: None)
            except json.JSONDecodeError as exc:
                error = f"not valid JSON ({exc.msg} at char {exc.pos})"
            except (ValueError, RecursionError):
                error = "not usable JSON"
        else:
            try:
                text = json.dumps(raw, default=str)
            except (TypeError, ValueError, RecursionError):
                text = str(raw)
        if error is None and isinstance(parsed, dict):
            data["arguments"] = parsed
            return data
        if error is None:
            error = f"a JSON {_json_kind(parsed)}, not an object"
        data["arguments"] = {}
        data["arguments_error"] = error[:256]
        data["arguments_raw"] = text[:MAX_RAW_ARGUMENTS]
        return data

    @property
    def malformed_json(self) -> bool:
        """The producer's arguments were not a JSON object."""
        return self.arguments_error is not None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "null" if value is None else type(value).__name__


class RunEvent(BaseModel):
    """One completed model call or agent-run step (docs/contracts.md)."""

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
        # Accept a single id as shorthand for a one-element list; ids are compared as strings. Sizes
        # are checked before anything is built: one hostile record must not blow up a run's state.
        if isinstance(value, dict):
            if len(value) > MAX_SUBJECT_TYPES:
                raise ValueError(f"{OVERSIZED}: subject names {len(value)} entity types, at most "
                                 f"{MAX_SUBJECT_TYPES}")
            out, total = {}, 0
            for k, vals in value.items():
                vals = vals if isinstance(vals, list) else [vals]
                total += len(vals)
                if total > MAX_SUBJECT_IDS:
                    raise ValueError(f"{OVERSIZED}: subject holds more than {MAX_SUBJECT_IDS} ids")
                key = str(k)
                if len(key) > MAX_ID_CHARS:
                    raise ValueError(f"{OVERSIZED}: a subject entity type is longer than {MAX_ID_CHARS}")
                ids = [str(v) for v in vals]
                if any(len(i) > MAX_ID_CHARS for i in ids):
                    raise ValueError(f"{OVERSIZED}: a subject id is longer than {MAX_ID_CHARS} characters")
                out[key] = ids
            return out
        return value

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _tool_calls(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_TOOL_CALLS:
            raise ValueError(f"{OVERSIZED}: {len(value)} tool calls, at most {MAX_TOOL_CALLS} per event")
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


def describe_validation_error(err: ValidationError, limit: int = 3,
                              model: Optional[type[BaseModel]] = None) -> str:
    """``field.path: message; ...`` — short enough for a Kafka header.

    The path names only what the contract defines: a key of a map whose keys the producer chooses
    (``metrics``, ``subject``, ``feedback``, tool ``arguments``) reads ``<key>``, a field the model
    does not declare ``<field>``, so a dead-letter detail never echoes what a producer wrote there.
    ``model`` is the model that raised ``err`` (default: the contract model of that name).

    >>> try:
    ...     RunEvent.model_validate({"schema_version": "1", "event_id": "e", "run_id": "r", "ts": 0,
    ...                              "app": "a", "model": "m", "metrics": {"jane@example.com": "x"}})
    ... except ValidationError as exc:
    ...     describe_validation_error(exc)
    'metrics.<key>: Input should be a valid number, unable to parse string as a number'
    """
    model = model or _contract_models().get(err.title)
    parts = []
    for e in err.errors()[:limit]:
        loc = _safe_loc(e.get("loc", ()), model) or "(record)"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(err.errors()) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def _contract_models() -> dict[str, type[BaseModel]]:
    from semwatch.contract.incidents import Incident, SuspectedChange
    from semwatch.contract.labels import LabelledWindow

    return {m.__name__: m for m in (RunEvent, ToolCall, Incident, SuspectedChange, LabelledWindow)}


def _safe_loc(loc: tuple, model: Optional[type[BaseModel]]) -> str:
    """A validation error's location with every producer-chosen name replaced by a placeholder."""
    out: list[str] = []
    hint: Any = model
    for part in loc:
        hint = _unwrap_optional(hint)
        origin = get_origin(hint)
        if isinstance(part, int):
            out.append(str(part))
            hint = (get_args(hint) or (None,))[0] if origin in (list, tuple) else None
        elif isinstance(hint, type) and issubclass(hint, BaseModel) and part in hint.model_fields:
            out.append(part)
            hint = hint.model_fields[part].annotation
        elif origin is dict:
            out.append("<key>")
            hint = (get_args(hint) or (None, None))[1]
        else:  # a field the model does not declare, or past what we can follow
            out.append("<field>" if isinstance(hint, type) and issubclass(hint, BaseModel) else "<key>")
            hint = None
    return ".".join(out)


def _unwrap_optional(hint: Any) -> Any:
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint
