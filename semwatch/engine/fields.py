"""Reading event fields by name, as configs name them: top level, ``metrics.x``, ``feedback.x``."""

from __future__ import annotations

import math
from typing import Any, Optional

from semwatch.contract import RunEvent


def field_value(event: RunEvent, path: str) -> Any:
    """A field by name: top level, ``metrics.x``, ``feedback.x`` or a dotted path into extras."""
    if path == "total_tokens":
        return event.numeric("total_tokens")
    if path.startswith("metrics."):
        return (event.metrics or {}).get(path[8:])
    head, _, rest = path.partition(".")
    value = getattr(event, head, None) if head in type(event).model_fields else None
    if value is None and event.model_extra:
        value = event.model_extra.get(head)
    for part in rest.split(".") if rest else ():
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def truthy(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    if isinstance(value, (list, dict)):
        return len(value) > 0
    return True


def as_number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def normalized_scalar(value: Any) -> Optional[str]:
    """A scalar as the string a ``where:`` filter compares (``True`` -> "true", ``3.0`` -> "3")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value)
    return None  # objects and lists never equal a scalar filter


# -- fast getters for detectors that read the same fields on every event ---------------------------
TOKEN_FIELDS = ("total_tokens", "input_tokens", "output_tokens")

# Top-level string fields of RunEvent: a segment of these is read with getattr (the fast path).
_STR_FIELDS = frozenset(("app", "route", "model", "provider", "prompt_version", "tenant",
                         "conversation_id", "run_id", "finish_reason", "error_type"))
_NUM_FIELDS = frozenset(("input_tokens", "output_tokens", "cost_usd", "latency_s"))


def segment_getter(group_by: tuple[str, ...]):
    """A function event -> segment dict for ``group_by`` (missing labels are "")."""
    fields = tuple(group_by)
    if all(f in _STR_FIELDS for f in fields):
        return lambda event: {f: getattr(event, f) or "" for f in fields}
    return lambda event: {f: (event.segment_value(f) or "") for f in fields}


def _total_tokens(event: RunEvent) -> Optional[float]:
    i, o = event.input_tokens, event.output_tokens
    if i is None and o is None:
        return None
    return float((i or 0) + (o or 0))


def value_getter(field_name: str):
    """A function event -> float or None for ``field_name`` (RunEvent.numeric, with fast paths)."""
    if field_name == "total_tokens":
        return _total_tokens
    if field_name in _NUM_FIELDS:  # validated numbers (finite, >= 0) or None
        return lambda event: getattr(event, field_name)
    return lambda event: event.numeric(field_name)


def default_kind(field_name: str) -> str:
    """token_spike for token fields and steps, cost_spike for cost_usd, threshold otherwise."""
    if field_name in TOKEN_FIELDS or field_name == "steps":
        return "token_spike"
    if field_name == "cost_usd":
        return "cost_spike"
    return "threshold"
