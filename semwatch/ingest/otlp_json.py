"""OTLP/JSON decoding: one ``ExportTraceServiceRequest`` record -> spans with plain attributes.

Handles hex ``traceId``/``spanId`` (lower-cased; base64 ids, as written by a generic protobuf JSON
encoder, are converted), int64 values as JSON strings (``{"intValue": "123"}``,
``"startTimeUnixNano": "1763800000000000000"``), every ``AnyValue`` variant, status codes as numbers
or enum names, and the snake_case field names that protobuf JSON parsers also accept. Pure: no I/O.
The mapping of spans to run events is :mod:`semwatch.ingest.otlp`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

REQUEST_MODEL_KEY = "gen_ai.request.model"
RESPONSE_MODEL_KEY = "gen_ai.response.model"
_OPERATION = "gen_ai.operation.name"
_HEX = re.compile(r"^[0-9a-f]+$")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


# --------------------------------------------------------------------------- decoding


def decode_export(raw: bytes) -> dict:
    """One Kafka record value -> an OTLP/JSON ``ExportTraceServiceRequest`` dict.

    Raises ``ValueError`` naming the problem for empty, non-UTF-8, non-JSON or non-trace payloads
    (including OTLP logs/metrics exports and the ``otlp_proto`` encoding sent to the wrong topic).
    """
    if isinstance(raw, str):
        text = raw
    else:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise ValueError(f"payload must be bytes, not {type(raw).__name__}")
        data = bytes(raw)
        if not data.strip():
            raise ValueError("empty payload (tombstone or empty record), expected an OTLP/JSON trace export")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"payload is not UTF-8 text (byte {exc.start}); is the exporter using "
                "encoding otlp_proto instead of otlp_json?"
            ) from None
    if not text.strip():
        raise ValueError("empty payload (tombstone or empty record), expected an OTLP/JSON trace export")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("payload is not usable JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError(f"not an OTLP trace export: top-level JSON is {json_type(doc)}, expected an object")
    spans = _get(doc, "resourceSpans")
    if spans is None:
        for other, what in (("resourceLogs", "logs"), ("resourceMetrics", "metrics"), ("resourceProfiles", "profiles")):
            if _get(doc, other) is not None:
                raise ValueError(f"not an OTLP trace export: it is an OTLP {what} export ({other})")
        keys = ", ".join(sorted(str(k) for k in doc)[:5]) or "none"
        raise ValueError(f"not an OTLP trace export: no resourceSpans field (top-level keys: {keys})")
    if not isinstance(spans, list):
        raise ValueError(f"not an OTLP trace export: resourceSpans is {json_type(spans)}, expected an array")
    return doc


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _get(obj: Any, camel: str) -> Any:
    """Field by its lowerCamelCase OTLP/JSON name, or the snake_case name protobuf also allows."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(camel)
    if value is None:
        value = obj.get(_CAMEL.sub("_", camel).lower())
    return value


def _any_value(value: Any, depth: int = 0) -> Any:
    """OTLP ``AnyValue`` -> plain Python value (None when empty or unreadable)."""
    if not isinstance(value, dict) or depth > 32:
        return None
    for key in ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue"):
        raw = _get(value, key)
        if raw is None:
            continue
        if key == "stringValue":
            return raw if isinstance(raw, str) else None
        if key == "boolValue":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            return None
        if key == "intValue":
            number = to_int(raw)
            return number if number is not None and -(2**63) <= number < 2**63 else None
        if key == "doubleValue":
            if isinstance(raw, bool):
                return None
            try:
                number = float(raw)
            except (TypeError, ValueError, OverflowError):
                return None
            return number if math.isfinite(number) else None  # events must stay JSON-compliant
        if key == "arrayValue":
            items = _get(raw, "values") or []
            if not isinstance(items, list):
                return None
            return [_any_value(item, depth + 1) for item in items]
        if key == "kvlistValue":
            return _attributes(_get(raw, "values"), depth + 1)
        if key == "bytesValue":
            return raw if isinstance(raw, str) else None
    return None


def _attributes(items: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(items, list):
        return out
    for item in items:
        key = item.get("key") if isinstance(item, dict) else None
        if isinstance(key, str) and key:
            out[key] = _any_value(item.get("value"), depth)
    return out


def to_int(raw: Any) -> Optional[int]:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if math.isfinite(raw) and raw.is_integer() else None
    if isinstance(raw, str):
        text = raw.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if math.isfinite(number) and number.is_integer() else None
    return None


def _norm_id(raw: Any, nbytes: int) -> Optional[str]:
    """Hex id of ``nbytes`` bytes (lower case), accepting base64 too; None when unusable or all zero."""
    if not isinstance(raw, str) or not raw:
        return None
    text = raw.strip().lower()
    if len(text) != nbytes * 2 or not _HEX.match(text):
        try:
            decoded = base64.b64decode(raw.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(decoded) != nbytes:
            return None
        text = decoded.hex()
    if set(text) == {"0"}:
        return None
    return text


# --------------------------------------------------------------------------- span model


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: Optional[str]
    name: str
    start: Optional[int]
    end: Optional[int]
    attrs: dict[str, Any]
    resource: dict[str, Any]
    status_code: Optional[int]
    events: list[dict[str, Any]]
    order: int
    op: str = ""
    children: list["Span"] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.trace_id}:{self.span_id}"

    def model(self) -> Optional[str]:
        for k in (RESPONSE_MODEL_KEY, REQUEST_MODEL_KEY):
            v = self.attrs.get(k)
            if isinstance(v, str) and v.strip():
                return v.strip()
        return None


def _status_code(status: Any) -> Optional[int]:
    code = _get(status, "code")
    if code is None:
        return None
    if isinstance(code, str):
        named = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2, "UNSET": 0, "OK": 1, "ERROR": 2}
        if code.upper() in named:
            return named[code.upper()]
    return to_int(code)


def _iter_spans(export: dict, rejected: list[tuple[str, str]]) -> Iterable[tuple[str, dict, dict]]:
    """(json path, resource attributes, raw span) for every span object in the export."""
    resource_spans = _get(export, "resourceSpans")
    if not isinstance(resource_spans, list):
        rejected.append(("resourceSpans", "missing or not an array"))
        return
    for ri, rs in enumerate(resource_spans):
        path = f"resourceSpans[{ri}]"
        if not isinstance(rs, dict):
            rejected.append((path, "not an object"))
            continue
        resource = _attributes(_get(_get(rs, "resource"), "attributes"))
        scope_spans = _get(rs, "scopeSpans")
        if scope_spans is None:
            scope_spans = _get(rs, "instrumentationLibrarySpans")  # pre-1.0 OTLP
        if scope_spans is None:
            continue
        if not isinstance(scope_spans, list):
            rejected.append((f"{path}.scopeSpans", "not an array"))
            continue
        for si, ss in enumerate(scope_spans):
            spath = f"{path}.scopeSpans[{si}]"
            spans = _get(ss, "spans") if isinstance(ss, dict) else None
            if not isinstance(ss, dict) or (spans is not None and not isinstance(spans, list)):
                rejected.append((spath, "not an object with a spans array"))
                continue
            for pi, span in enumerate(spans or []):
                yield f"{spath}.spans[{pi}]", resource, span


def _looks_genai(attrs: dict[str, Any]) -> bool:
    return any(k.startswith("gen_ai.") for k in attrs)


def read_spans(export: dict, rejected: list[tuple[str, str]]) -> list[Span]:
    spans: list[Span] = []
    seen: set[str] = set()
    for order, (path, resource, raw) in enumerate(_iter_spans(export, rejected)):
        if not isinstance(raw, dict):
            rejected.append((path, "span is not an object"))
            continue
        attrs = _attributes(_get(raw, "attributes"))
        trace_id = _norm_id(_get(raw, "traceId"), 16)
        span_id = _norm_id(_get(raw, "spanId"), 8)
        if trace_id is None or span_id is None:
            if _looks_genai(attrs):
                which = "traceId" if trace_id is None else "spanId"
                rejected.append((path, f"GenAI span {str(_get(raw, 'name'))[:80]!r} has a missing or invalid {which}"))
            continue
        key = f"{trace_id}:{span_id}"
        if key in seen:
            if _looks_genai(attrs):
                rejected.append((key, "duplicate span in the export; the first copy was used"))
            continue
        seen.add(key)
        events = []
        raw_events = _get(raw, "events")
        for ev in raw_events if isinstance(raw_events, list) else []:
            if isinstance(ev, dict):
                events.append({"name": ev.get("name"), "attributes": _attributes(_get(ev, "attributes"))})
        start = to_int(_get(raw, "startTimeUnixNano"))
        end = to_int(_get(raw, "endTimeUnixNano"))
        op = attrs.get(_OPERATION)
        name = _get(raw, "name")
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=span_id,
                parent_id=_norm_id(_get(raw, "parentSpanId"), 8),
                name=name if isinstance(name, str) else "",
                start=start if start and start > 0 else None,
                end=end if end and end > 0 else None,
                attrs=attrs,
                resource=resource,
                status_code=_status_code(_get(raw, "status")),
                events=events,
                order=order,
                op=op.strip().lower() if isinstance(op, str) else "",
            )
        )
    return spans
