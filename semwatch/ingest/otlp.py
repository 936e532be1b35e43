"""OpenTelemetry input: OTLP/JSON trace exports -> normalized run events (docs/contracts.md).

The OpenTelemetry Collector's kafka exporter with ``encoding: otlp_json`` writes one
``ExportTraceServiceRequest`` per Kafka record. :func:`decode_export` turns such a record into a dict
(or says clearly why it cannot), and :func:`spans_to_events` maps the spans of one export to
normalized run events. Both are pure: no I/O, no clock, no global state; the same export always gives
the same events, so re-delivered records are idempotent downstream (``event_id`` is stable).

OTLP/JSON details handled: hex ``traceId``/``spanId`` (lower-cased; base64 ids, as written by a
generic protobuf JSON encoder, are converted), int64 values as JSON strings (``{"intValue": "123"}``,
``"startTimeUnixNano": "1763800000000000000"``), every ``AnyValue`` variant (``stringValue``,
``intValue``, ``doubleValue``, ``boolValue``, ``bytesValue``, ``arrayValue{values}``,
``kvlistValue{values}``), status codes as numbers or enum names, and the snake_case field names
that protobuf JSON parsers also accept.

Mapping rules
-------------
Which spans become events
  * A *model-call span* is one with ``gen_ai.operation.name`` in ``chat``, ``text_completion``,
    ``generate_content``, or any span carrying ``gen_ai.request.model``/``gen_ai.response.model``
    whose operation is not ``execute_tool``, ``embeddings``, ``create_agent`` or ``invoke_agent``.
    An ``invoke_agent`` span counts as a model call only when it has a model attribute and no
    model-call span below it in the export (a remote agent seen as one opaque call); otherwise its
    model and usage would double-count its children's.
  * Every accepted model-call span yields exactly one event. ``embeddings`` spans, agent spans and
    non-GenAI spans (HTTP, DB, ...) are ignored without a report.
  * ``execute_tool`` spans never yield their own event when a model-call span can take them (below).

Event fields
  * ``schema_version`` = ``"1"``; ``event_id`` = ``"<traceId>:<spanId>"`` (stable, idempotent).
  * ``run_id`` = the span id of the *outermost* ``invoke_agent`` span enclosing the span (a
    sub-agent's calls belong to the run of the agent that delegated to it), else the trace id (a
    run = one trace).
  * ``ts`` = span end time as RFC 3339 UTC with milliseconds; ``latency_s`` = end - start (omitted
    when the start is missing, after the end, or more than 10^6 s before it).
  * ``app`` = resource attribute ``service.name`` (``app_attribute``; a span attribute of that name
    is the fallback).
  * ``model`` = ``gen_ai.response.model``, else ``gen_ai.request.model``; ``provider`` =
    ``gen_ai.provider.name``, else the older ``gen_ai.system``.
  * ``input_tokens``/``output_tokens`` = ``gen_ai.usage.input_tokens``/``output_tokens`` (older
    ``prompt_tokens``/``completion_tokens``) as ints; negative, non-integral or implausible
    (> 10^9) values are dropped.
  * ``finish_reason`` = first of ``gen_ai.response.finish_reasons`` (else the first output message's
    ``finish_reason``); ``refusal`` = ``true`` when the provider says it declined
    (:func:`provider_refused`: ``content_filter``, Anthropic's ``refusal``, Gemini's ``SAFETY`` and
    other safety reasons, OpenAI's ``message.refusal``) (never set to false: semwatch classifies
    ``response_text`` itself).
  * ``error_type`` = ``error.type``, else ``"error"`` when the span status is ERROR (code 2).
  * Context attributes are looked up on the span, then on its ancestors (nearest first), then on the
    span's resource, because frameworks put them on the agent span, not on each chat span:
    ``route`` = ``semwatch.route``, else ``gen_ai.agent.name``; ``conversation_id`` =
    ``gen_ai.conversation.id``; ``prompt_version`` = ``semwatch.prompt_version``,
    ``gen_ai.prompt.version``, ``gen_ai.prompt_version`` or ``prompt.version``; ``tenant`` =
    ``semwatch.tenant``, else ``tenant.id``; ``request_flagged`` = ``semwatch.request_flagged``.
  * ``subject`` = every ``semwatch.subject.<type>`` attribute (string, number or array of them) of the
    resource, the ancestors and the span, merged into ``{type: [ids]}`` (ids as strings, de-duplicated,
    in order of first appearance).
  * ``metrics`` = numeric span attributes ``semwatch.metric.<name>``, and the scores of
    ``gen_ai.evaluation.result`` span events (``metrics.<evaluation name>``; labels in the extra field
    ``evaluation_labels``), see :mod:`semwatch.ingest.otlp_evaluations`.
  * ``request_text`` = text parts of the last ``user`` message in ``gen_ai.input.messages`` (all text
    parts when there is no user message); ``response_text`` = text parts of
    ``gen_ai.output.messages``. Both only when content capture is on (span attribute, or attribute of
    a span event such as ``gen_ai.client.inference.operation.details``), truncated to 4096 UTF-8
    bytes. Messages may be JSON strings (the usual case) or structured array values; both the
    ``parts`` form (``{"type": "text", "content": ...}``) and a plain ``content`` string are read.

Tool calls
  * Each ``execute_tool`` span becomes ``{name, call_id, arguments, result?, side_effect?}``:
    ``name`` = ``gen_ai.tool.name`` (else the span name without ``execute_tool``), ``call_id`` =
    ``gen_ai.tool.call.id`` (else the tool span's id), ``arguments`` = ``gen_ai.tool.call.arguments``
    parsed as a JSON object (``{}`` when absent); text that is not a JSON object (truncated JSON, an
    array, a bare string) is passed on as text, at most 1024 bytes, for the run-event contract to
    keep as a malformed call (``arguments_error``, ``arguments_raw``), ``result`` = ``gen_ai.tool.call.result`` parsed as JSON (an object is kept as is, any
    other JSON value becomes ``{"value": v}``, non-JSON text ``{"text": s[:4096 bytes]}``),
    ``side_effect`` = boolean ``semwatch.tool.side_effect`` when present, and ``error_type`` (extra
    field: ``error.type``, or ``"error"`` for status ERROR) when the tool span failed.
  * It is attached to the model-call span that requested it: the one whose output messages contain a
    ``tool_call`` part with the same id; else the latest model-call span of the same run that ended
    at or before the tool span started; else the next model-call span of the run; the same search
    is then repeated over the whole trace. Tool calls in an event are ordered by start time.
  * A tool span with no accepted model-call span in its trace yields an event of its own (with
    ``tool_calls`` = that one call) only when it carries a model attribute; otherwise it is rejected.

Rejections
  The second return value lists ``(span identifier, reason)`` pairs: model-call spans without a model,
  without an end time, without an app, with unusable ids, or with a label (model, route, ...) longer
  than 256 characters; tool spans that could not be attached, or whose name or call id is longer
  than 256 characters; duplicate spans; malformed containers. Identifiers are ``"<traceId>:<spanId>"``, or the JSON path
  of the span when it has no usable ids. Nothing inside a well-formed export raises.

Operational note
  Events are built from one export at a time. For run grouping and tool attachment to be complete,
  all spans of a trace must arrive in the same export: put the collector-contrib ``groupbytrace``
  processor in the traces pipeline before the kafka exporter. Without it, the BatchSpanProcessor
  often ships child spans before their ``invoke_agent`` parent ends, and such events fall back to
  the trace id as ``run_id``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Optional

from semwatch.ingest.otlp_evaluations import evaluations, merge_into
from semwatch.ingest.otlp_json import (
    REQUEST_MODEL_KEY,
    RESPONSE_MODEL_KEY,
    Span,
    decode_export,
    json_type,
    read_spans,
    to_int,
)

__all__ = ["decode_export", "spans_to_events", "MAX_TEXT_BYTES"]

SCHEMA_VERSION = "1"
MAX_TEXT_BYTES = 4096
MAX_LABEL_CHARS = 256  # ids and labels (model, route, tool name, ...), as in semwatch.contract
MAX_TOKENS = 10**9
MAX_LATENCY_S = 1e6
_LABEL_FIELDS = ("app", "model", "route", "provider", "prompt_version", "tenant", "conversation_id",
                 "finish_reason", "error_type")

MODEL_CALL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
_NOT_MODEL_CALL_OPERATIONS = frozenset({"execute_tool", "embeddings", "create_agent", "invoke_agent"})


_INPUT_MESSAGES = "gen_ai.input.messages"
_OUTPUT_MESSAGES = "gen_ai.output.messages"
_SUBJECT_PREFIX = "semwatch.subject."
_METRIC_PREFIX = "semwatch.metric."

_ROUTE_KEYS = ("semwatch.route", "gen_ai.agent.name")
_PROMPT_VERSION_KEYS = (
    "semwatch.prompt_version",
    "gen_ai.prompt.version",
    "gen_ai.prompt_version",
    "prompt.version",
)
_TENANT_KEYS = ("semwatch.tenant", "tenant.id")
_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
_INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT_TOKEN_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")

_STATUS_ERROR = 2


# --------------------------------------------------------------------------- helpers


def _ancestors(span: Span, index: dict[str, Span]) -> list[Span]:
    """Parents, nearest first, within the export (cycle-safe)."""
    out: list[Span] = []
    seen = {span.key}
    parent = span.parent_id
    while parent:
        key = f"{span.trace_id}:{parent}"
        node = index.get(key)
        if node is None or key in seen:
            break
        seen.add(key)
        out.append(node)
        parent = node.parent_id
    return out


def _has_model_call_below(span: Span, model_keys: set[str]) -> bool:
    stack = list(span.children)
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        if node.key in seen:
            continue
        seen.add(node.key)
        if node.key in model_keys:
            return True
        stack.extend(node.children)
    return False


def _text(value: Any) -> Optional[str]:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _first(attrs: dict[str, Any], keys: Iterable[str]) -> Optional[str]:
    for k in keys:
        v = _text(attrs.get(k))
        if v is not None:
            return v
    return None


def _inherited(span: Span, lineage: list[Span], keys: tuple[str, ...]) -> Optional[str]:
    """First of ``keys`` on the span, then its ancestors (nearest first), then its resource."""
    for node in [span, *lineage]:
        v = _first(node.attrs, keys)
        if v is not None:
            return v
    return _first(span.resource, keys)


def _bool(value: Any) -> Optional[bool]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _count(attrs: dict[str, Any], keys: tuple[str, ...]) -> Optional[int]:
    for k in keys:
        if k in attrs:
            n = to_int(attrs[k])
            if n is not None and 0 <= n <= MAX_TOKENS:
                return n
    return None


def _truncate(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def _rfc3339(ns: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _finite_float(text: str) -> Optional[float]:
    number = float(text)
    return number if math.isfinite(number) else None


def _parse_json(value: Any) -> tuple[Any, bool]:
    """(parsed value, ok). Structured attribute values pass through as already parsed."""
    if isinstance(value, str):
        try:
            # NaN/Infinity are not JSON; read them as null so events stay JSON-compliant.
            return json.loads(value, parse_constant=lambda _: None, parse_float=_finite_float), True
        except (ValueError, RecursionError):
            return None, False
    return value, value is not None


def _messages(span: Span, key: str) -> list[dict]:
    raw = span.attrs.get(key)
    if raw is None:
        for ev in span.events:
            if key in ev["attributes"]:
                raw = ev["attributes"][key]
                break
    parsed, ok = _parse_json(raw)
    if not ok:
        return []
    if isinstance(parsed, dict):
        parsed = [parsed]
    return [m for m in parsed if isinstance(m, dict)] if isinstance(parsed, list) else []


#: Finish reasons by which a provider says it declined (ground truth, not a guess): OpenAI's and
#: Azure's content filter, Anthropic's ``stop_reason: "refusal"``, Gemini's safety reasons.
REFUSAL_FINISH_REASONS = frozenset({
    "content_filter", "refusal", "safety", "recitation", "blocklist", "prohibited_content", "spii",
    "image_safety", "finish_reason_safety", "finish_reason_recitation", "finish_reason_blocklist",
    "finish_reason_prohibited_content", "finish_reason_spii",
})


def provider_refused(finish: Optional[str], reasons: Any, output: list[dict]) -> bool:
    """Whether the provider itself said the response declines: a refusal finish reason (any of
    ``gen_ai.response.finish_reasons``), or an output message with a ``refusal`` part or field
    (OpenAI's ``message.refusal``). Never says "not refused": absence of a signal proves nothing.

    >>> provider_refused("SAFETY", None, []), provider_refused("stop", ["stop"], [])
    (True, False)
    >>> provider_refused("stop", None, [{"role": "assistant", "parts": [{"type": "refusal", "content": "no"}]}])
    True
    """
    names = [finish] + (reasons if isinstance(reasons, list) else [reasons])
    if any(isinstance(r, str) and r.strip().lower() in REFUSAL_FINISH_REASONS for r in names):
        return True
    for message in output:
        if isinstance(message.get("refusal"), str) and message["refusal"]:
            return True
        parts = message.get("parts")
        if isinstance(parts, list) and any(isinstance(p, dict) and p.get("type") == "refusal" for p in parts):
            return True
    return False


def _message_text(message: dict) -> str:
    pieces: list[str] = []
    parts = message.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                content = part.get("content", part.get("text"))
                if isinstance(content, str) and content:
                    pieces.append(content)
    content = message.get("content")
    if isinstance(content, str) and content:
        pieces.append(content)
    return "\n".join(pieces)


def _request_text(messages: list[dict]) -> Optional[str]:
    users = [m for m in messages if m.get("role") == "user"]
    chosen = users[-1:] if users else messages
    text = "\n".join(t for t in (_message_text(m) for m in chosen) if t)
    return _truncate(text) if text else None


def _response_text(messages: list[dict]) -> Optional[str]:
    text = "\n".join(t for t in (_message_text(m) for m in messages) if t)
    return _truncate(text) if text else None


def _requested_call_ids(messages: list[dict]) -> set[str]:
    ids: set[str] = set()
    for m in messages:
        parts = m.get("parts")
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and part.get("type") == "tool_call":
                cid = _text(part.get("id"))
                if cid:
                    ids.add(cid)
    return ids


def _subject(span: Span, lineage: list[Span]) -> dict[str, list[str]]:
    subject: dict[str, list[str]] = {}
    for attrs in [span.resource, *(n.attrs for n in reversed(lineage)), span.attrs]:
        for key, value in attrs.items():
            if not key.startswith(_SUBJECT_PREFIX):
                continue
            kind = key[len(_SUBJECT_PREFIX):].strip()
            if not kind:
                continue
            values = value if isinstance(value, list) else [value]
            for v in values:
                ident = _text(v)
                if ident is None:
                    continue
                bucket = subject.setdefault(kind, [])
                if ident not in bucket:
                    bucket.append(ident)
    return {k: v for k, v in subject.items() if v}


def _metrics(attrs: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in attrs.items():
        if key.startswith(_METRIC_PREFIX) and len(key) > len(_METRIC_PREFIX):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[key[len(_METRIC_PREFIX):]] = value
    return out


# --------------------------------------------------------------------------- events


@dataclass
class _ModelCall:
    span: Span
    run_id: str
    event: dict[str, Any]
    call_ids: set[str]
    tools: list[tuple[int, str, dict]] = field(default_factory=list)


def _run_id(span: Span, lineage: list[Span]) -> str:
    agent = None
    for node in [span, *lineage]:
        if node.op == "invoke_agent":
            agent = node  # keep walking: the outermost agent span wins
    return agent.span_id if agent is not None else span.trace_id


def _build_event(span: Span, lineage: list[Span], app_attribute: str) -> tuple[Optional[dict], str, set[str]]:
    """(event or None, reason when None, tool-call ids requested in the output messages)."""
    model = span.model()
    label = span.op or "GenAI"
    if model is None:
        return None, f"{label} span {span.name[:80]!r} has no {REQUEST_MODEL_KEY} or {RESPONSE_MODEL_KEY}", set()
    if span.end is None:
        return None, f"{label} span {span.name[:80]!r} has no endTimeUnixNano", set()
    app = _first(span.resource, (app_attribute,)) or _first(span.attrs, (app_attribute,))
    if app is None:
        return None, f"{label} span {span.name[:80]!r} has no {app_attribute!r} resource attribute (app)", set()

    a = span.attrs
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": span.key,
        "run_id": _run_id(span, lineage),
        "ts": _rfc3339(span.end),
        "app": app,
        "model": model,
    }
    optional: dict[str, Any] = {
        "route": _inherited(span, lineage, _ROUTE_KEYS),
        "provider": _first(a, _PROVIDER_KEYS),
        "prompt_version": _inherited(span, lineage, _PROMPT_VERSION_KEYS),
        "tenant": _inherited(span, lineage, _TENANT_KEYS),
        "conversation_id": _inherited(span, lineage, ("gen_ai.conversation.id",)),
        "input_tokens": _count(a, _INPUT_TOKEN_KEYS),
        "output_tokens": _count(a, _OUTPUT_TOKEN_KEYS),
    }
    if span.start is not None and 0 <= span.end - span.start <= MAX_LATENCY_S * 1e9:
        optional["latency_s"] = round((span.end - span.start) / 1e9, 9)

    output = _messages(span, _OUTPUT_MESSAGES)
    reasons = a.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list):
        finish = next((t for t in (_text(r) for r in reasons) if t), None)
    else:
        finish = _text(reasons)
    if finish is None:
        finish = next((t for t in (_text(m.get("finish_reason")) for m in output) if t), None)
    optional["finish_reason"] = finish

    error = _text(a.get("error.type"))
    if error is None and span.status_code == _STATUS_ERROR:
        error = "error"
    optional["error_type"] = error

    optional["request_text"] = _request_text(_messages(span, _INPUT_MESSAGES))
    optional["response_text"] = _response_text(output)
    if provider_refused(finish, reasons, output):
        optional["refusal"] = True
    for node in [span, *lineage]:
        flagged = _bool(node.attrs.get("semwatch.request_flagged"))
        if flagged is not None:
            optional["request_flagged"] = flagged
            break
    optional["subject"] = _subject(span, lineage) or None
    optional["metrics"] = _metrics(a) or None

    event.update({k: v for k, v in optional.items() if v is not None})
    merge_into(event, *evaluations(span.events))
    for name in _LABEL_FIELDS:
        if name in event and len(event[name]) > MAX_LABEL_CHARS:
            return None, f"{label} span {span.name[:80]!r}: {name} is longer than {MAX_LABEL_CHARS} characters", set()
    return event, "", _requested_call_ids(output)


def _tool_call(span: Span) -> dict[str, Any]:
    a = span.attrs
    name = _text(a.get("gen_ai.tool.name"))
    if name is None:
        stripped = re.sub(r"^execute_tool\s*", "", span.name).strip()
        name = stripped or "unknown_tool"
    call: dict[str, Any] = {"name": name, "call_id": _text(a.get("gen_ai.tool.call.id")) or span.span_id}

    raw_args = a.get("gen_ai.tool.call.arguments")
    arguments: Any = {}
    if raw_args is not None:
        parsed, ok = _parse_json(raw_args)
        if ok and isinstance(parsed, dict):
            arguments = parsed
        else:
            # Truncated JSON, an array, a bare string: a malformed call the run event contract
            # keeps (as text) and the malformed_tool_call detector counts; the span is not rejected.
            arguments = _truncate(raw_args if isinstance(raw_args, str) else json.dumps(raw_args), 1024)
    call["arguments"] = arguments

    if "gen_ai.tool.call.result" in a and a["gen_ai.tool.call.result"] is not None:
        raw_result = a["gen_ai.tool.call.result"]
        parsed, ok = _parse_json(raw_result)
        if ok and isinstance(parsed, dict):
            call["result"] = parsed
        elif ok:
            call["result"] = {"value": parsed}
        else:
            call["result"] = {"text": _truncate(str(raw_result))}

    side_effect = _bool(a.get("semwatch.tool.side_effect"))
    if side_effect is not None:
        call["side_effect"] = side_effect
    error = _text(a.get("error.type"))
    if error is None and span.status_code == _STATUS_ERROR:
        error = "error"
    if error is not None:
        call["error_type"] = error
    return call


def _pick_by_time(candidates: list[_ModelCall], tool: Span) -> Optional[_ModelCall]:
    if not candidates:
        return None
    at = tool.start if tool.start is not None else tool.end
    if at is None:
        return None
    before = [c for c in candidates if c.span.end is not None and c.span.end <= at]
    if before:
        return max(before, key=lambda c: (c.span.end, c.span.start or 0, c.span.order))
    after = [c for c in candidates if c.span.start is not None and c.span.start >= at]
    if after:
        return min(after, key=lambda c: (c.span.start, c.span.order))
    # Overlapping in time (clock skew or parallel work): the one that ended nearest before the tool did.
    return min(candidates, key=lambda c: (abs((c.span.end or 0) - at), c.span.order))


def _attach(tool: Span, call_id: Optional[str], run_id: str, calls: list[_ModelCall]) -> Optional[_ModelCall]:
    same_run = [c for c in calls if c.run_id == run_id]
    if call_id:
        for pool in (same_run, calls):
            matches = [c for c in pool if call_id in c.call_ids]
            if matches:
                return _pick_by_time(matches, tool) or matches[0]
    for pool in (same_run, calls):
        chosen = _pick_by_time(pool, tool)
        if chosen is not None:
            return chosen
    return None


def _evaluations_of_runs(spans: list[Span], index: dict[str, Span],
                         by_trace: dict[str, list[_ModelCall]]) -> None:
    """Evaluation results on an ``invoke_agent`` span judge the run's answer: the model call below
    that span that ended last (semwatch.ingest.otlp_evaluations)."""
    for agent in spans:
        if agent.op != "invoke_agent" or not agent.events:
            continue
        scores, labels = evaluations(agent.events)
        if not scores and not labels:
            continue
        below = [c for c in by_trace.get(agent.trace_id, [])
                 if any(node is agent for node in _ancestors(c.span, index))]
        if below:
            last = max(below, key=lambda c: (c.span.end or 0, c.span.order))
            merge_into(last.event, scores, labels)


def spans_to_events(
    export: dict, *, app_attribute: str = "service.name"
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Map one OTLP/JSON trace export to (normalized run events, rejected spans).

    Events are JSON-ready dicts per docs/contracts.md, ordered by ``ts`` then ``event_id``; rejected spans are
    ``(span identifier, reason)`` pairs. See the module docstring for the mapping rules.
    """
    rejected: list[tuple[str, str]] = []
    if not isinstance(export, dict):
        raise ValueError(f"not an OTLP trace export: expected an object, got {json_type(export)}")
    spans = read_spans(export, rejected)
    index = {s.key: s for s in spans}
    for s in spans:
        if s.parent_id:
            parent = index.get(f"{s.trace_id}:{s.parent_id}")
            if parent is not None and parent is not s:
                parent.children.append(s)

    # Classify.
    candidates: list[Span] = []
    tools: list[Span] = []
    agents_with_model: list[Span] = []
    for s in spans:
        if s.op == "execute_tool":
            tools.append(s)
        elif s.op in MODEL_CALL_OPERATIONS:
            candidates.append(s)
        elif s.op == "invoke_agent" and s.model() is not None:
            agents_with_model.append(s)
        elif s.op not in _NOT_MODEL_CALL_OPERATIONS and s.model() is not None:
            candidates.append(s)
    candidate_keys = {s.key for s in candidates}
    for agent in agents_with_model:
        if not _has_model_call_below(agent, candidate_keys):
            candidates.append(agent)

    # One event per model-call span.
    by_trace: dict[str, list[_ModelCall]] = {}
    for s in sorted(candidates, key=lambda x: x.order):
        try:
            lineage = _ancestors(s, index)
            event, reason, call_ids = _build_event(s, lineage, app_attribute)
        except Exception as exc:  # never raise on odd input inside a well-formed export
            event, reason, call_ids = None, f"unreadable span: {type(exc).__name__}: {exc}", set()
        if event is None:
            rejected.append((s.key, reason))
            continue
        by_trace.setdefault(s.trace_id, []).append(_ModelCall(s, event["run_id"], event, call_ids))

    # Tool spans: attach to the requesting model call, else their own event, else reject.
    standalone: list[dict] = []
    for t in sorted(tools, key=lambda x: (x.start or x.end or 0, x.order)):
        try:
            lineage = _ancestors(t, index)
            call = _tool_call(t)
            if max(len(call["name"]), len(call["call_id"])) > MAX_LABEL_CHARS:
                rejected.append((t.key, f"execute_tool name or call id is longer than {MAX_LABEL_CHARS} characters"))
                continue
            target = _attach(t, _text(t.attrs.get("gen_ai.tool.call.id")), _run_id(t, lineage), by_trace.get(t.trace_id, []))
            if target is not None:
                target.tools.append((t.start or t.end or 0, t.span_id, call))
                continue
            if t.model() is None:
                rejected.append(
                    (t.key, f"execute_tool {call['name']!r} has no model-call span in its trace to attach to and no model attribute")
                )
                continue
            event, reason, _ = _build_event(t, lineage, app_attribute)
            if event is None:
                rejected.append((t.key, reason))
                continue
            event["tool_calls"] = [call]
            standalone.append(event)
        except Exception as exc:  # never raise on odd input inside a well-formed export
            rejected.append((t.key, f"unreadable tool span: {type(exc).__name__}: {exc}"))

    _evaluations_of_runs(spans, index, by_trace)
    events: list[tuple[int, str, dict]] = []
    for calls in by_trace.values():
        for c in calls:
            if c.tools:
                c.event["tool_calls"] = [call for _, _, call in sorted(c.tools, key=lambda x: (x[0], x[1]))]
            events.append((c.span.end or 0, c.event["event_id"], c.event))
    for ev in standalone:
        events.append((index[ev["event_id"]].end or 0, ev["event_id"], ev))
    events.sort(key=lambda x: (x[0], x[1]))
    return [ev for _, _, ev in events], rejected
