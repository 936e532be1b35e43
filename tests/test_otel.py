"""OTLP/JSON trace exports -> normalized run events (semwatch.ingest.otlp)."""

from __future__ import annotations

import base64
import copy
import json
from datetime import datetime
from pathlib import Path

import pytest

from semwatch.ingest.otlp import MAX_TEXT_BYTES, decode_export, spans_to_events

DATA = Path(__file__).parent / "data" / "otlp_genai_export.json"

AGENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
AGENT_SPAN = "b7ad6b7169203331"
FAQ_TRACE = "0af7651916cd43dd8448eb211c80319c"
RATE_TRACE = "1d9e4b5c6a7f80912a3b4c5d6e7f8091"
FILTER_TRACE = "7e6d5c4b3a2918070f1e2d3c4b5a6978"
TOOLARGS_TRACE = "9a8b7c6d5e4f30211203948576abcdef"

USER_ASK = "Where is my order #W1001? It arrived damaged, I want a refund."
AGENT_CONTEXT = {
    "app": "support-bot",
    "model": "gpt-4o-2024-08-06",
    "route": "support_agent",
    "provider": "openai",
    "prompt_version": "support-v7",
    "tenant": "acme",
    "conversation_id": "conv_8812",
}
AGENT_SUBJECT = {"user_id": ["u_17"], "order_id": ["#W1001"]}

EXPECTED_EVENTS = [
    {
        "schema_version": "1",
        "event_id": f"{AGENT_TRACE}:5fb397be34d26b51",
        "run_id": AGENT_SPAN,
        "ts": "2025-11-22T08:26:41.300Z",
        **AGENT_CONTEXT,
        "input_tokens": 812,
        "output_tokens": 41,
        "latency_s": 1.2,
        "finish_reason": "tool_calls",
        "request_text": USER_ASK,
        "subject": AGENT_SUBJECT,
        "tool_calls": [
            {
                "name": "get_order",
                "call_id": "call_A1",
                "arguments": {"order_id": "#W1001"},
                "result": {"order_id": "#W1001", "status": "delivered", "total": 42.5, "customer_id": "u_17"},
                "side_effect": False,
            }
        ],
    },
    {
        "schema_version": "1",
        "event_id": f"{AGENT_TRACE}:e457b5a2e4d86bd1",
        "run_id": AGENT_SPAN,
        "ts": "2025-11-22T08:26:43.000Z",
        **AGENT_CONTEXT,
        "input_tokens": 901,
        "output_tokens": 38,
        "latency_s": 1.35,
        "finish_reason": "tool_calls",
        "request_text": USER_ASK,
        "subject": AGENT_SUBJECT,
        "tool_calls": [
            {
                "name": "refund_order",
                "call_id": "call_A2",
                "arguments": {"order_id": "#W1001", "amount": 42.5, "reason": "damaged"},
                "result": {"refund_id": "rf_9", "status": "issued"},
                "side_effect": True,
            }
        ],
    },
    {
        "schema_version": "1",
        "event_id": f"{AGENT_TRACE}:9c2f8b1a7d6e5f40",
        "run_id": AGENT_SPAN,
        "ts": "2025-11-22T08:26:45.200Z",
        **AGENT_CONTEXT,
        "input_tokens": 1010,
        "output_tokens": 57,
        "latency_s": 1.25,
        "finish_reason": "stop",
        "request_text": USER_ASK,
        "response_text": "Sorry about the damaged delivery. I've issued a refund of $42.50 for order #W1001 "
        "(refund rf_9); expect it within 3-5 business days.",
        "subject": AGENT_SUBJECT,
        "metrics": {"guardrail_score": 0.02},
    },
    {
        "schema_version": "1",
        "event_id": f"{FAQ_TRACE}:f1e2d3c4b5a69788",
        "run_id": FAQ_TRACE,
        "ts": "2025-11-22T08:26:52.400Z",
        "app": "faq-bot",
        "model": "claude-sonnet-4-5-20250929",
        "route": "billing_faq",
        "provider": "anthropic",
        "prompt_version": "faq-v3",
        "tenant": "globex",
        "input_tokens": 1540,
        "output_tokens": 212,
        "latency_s": 2.2,
        "finish_reason": "end_turn",
        "request_text": "How do I update the card on file?",
        "response_text": "Go to Settings → Billing → Payment methods, choose Add card, then mark it as default.",
        "subject": {"user_id": ["u_42"]},
    },
    {
        "schema_version": "1",
        "event_id": f"{RATE_TRACE}:2c3d4e5f60718293",
        "run_id": RATE_TRACE,
        "ts": "2025-11-22T08:27:00.350Z",
        "app": "support-bot",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "prompt_version": "support-v7",
        "latency_s": 0.35,
        "error_type": "rate_limit",
    },
    {
        "schema_version": "1",
        "event_id": f"{FILTER_TRACE}:3a4b5c6d7e8f9012",
        "run_id": FILTER_TRACE,
        "ts": "2025-11-22T08:27:10.800Z",
        "app": "support-bot",
        "model": "gpt-4o-2024-11-20",
        "route": "returns",
        "provider": "azure.ai.openai",
        "tenant": "initech",
        "input_tokens": 96,
        "output_tokens": 0,
        "latency_s": 0.8,
        "finish_reason": "content_filter",
        "refusal": True,
    },
    {
        "schema_version": "1",
        "event_id": f"{TOOLARGS_TRACE}:4d5e6f708192a3b4",
        "run_id": TOOLARGS_TRACE,
        "ts": "2025-11-22T08:27:20.900Z",
        "app": "support-bot",
        "model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "input_tokens": 640,
        "output_tokens": 25,
        "latency_s": 0.9,
        "finish_reason": "tool_calls",
        "subject": {"order_id": ["#W2002"]},
        "tool_calls": [
            {
                "name": "cancel_order",
                "call_id": "call_F1",
                # Truncated JSON: kept as text, a malformed call for the contract and the detector.
                "arguments": '{"order_id": "#W2002", "reason": ',
                "result": {"text": "error: missing required argument 'reason'"},
                "side_effect": True,
                "error_type": "ValueError",
            }
        ],
    },
    {
        "schema_version": "1",
        "event_id": f"{TOOLARGS_TRACE}:708192a3b4c5d6e7",
        "run_id": TOOLARGS_TRACE,
        "ts": "2025-11-22T08:27:22.000Z",
        "app": "support-bot",
        "model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "input_tokens": 700,
        "output_tokens": 30,
        "latency_s": 0.85,
        "finish_reason": "stop",
        "subject": {"order_id": ["#W2002"]},
    },
]

EXPECTED_REJECTED = [
    (
        "b1c2d3e4f5061728394a5b6c7d8e9f00:8192a3b4c5d6e7f8",
        "chat span 'chat' has no gen_ai.request.model or gen_ai.response.model",
    ),
    (
        "c0ffee00c0ffee00c0ffee00c0ffee00:92a3b4c5d6e7f809",
        "execute_tool 'lookup_customer' has no model-call span in its trace to attach to and no model attribute",
    ),
]


# --------------------------------------------------------------------------- validators

_REQUIRED = {"schema_version", "event_id", "run_id", "ts", "app", "model"}
_OPTIONAL_STR = {"route", "provider", "prompt_version", "tenant", "conversation_id", "finish_reason",
                 "error_type", "request_text", "response_text"}


def check_event(event: dict) -> None:
    """Hand-written check of the run-event contract (docs/contracts.md)."""
    missing = _REQUIRED - event.keys()
    assert not missing, f"missing required fields {missing}"
    assert event["schema_version"] == "1"
    for key in ("event_id", "run_id", "app", "model"):
        assert isinstance(event[key], str) and event[key], key
    ts = event["ts"]
    assert isinstance(ts, str) and ts.endswith("Z")
    assert datetime.fromisoformat(ts[:-1] + "+00:00").tzinfo is not None
    for key in _OPTIONAL_STR & event.keys():
        assert isinstance(event[key], str), key
    for key in ("input_tokens", "output_tokens"):
        if key in event:
            assert type(event[key]) is int and event[key] >= 0, key
    if "latency_s" in event:
        assert isinstance(event["latency_s"], float) and event["latency_s"] >= 0
    for key in ("refusal", "request_flagged"):
        if key in event:
            assert isinstance(event[key], bool)
    for key in ("request_text", "response_text"):
        if key in event:
            assert len(event[key].encode()) <= MAX_TEXT_BYTES
    if "subject" in event:
        assert isinstance(event["subject"], dict) and event["subject"]
        for kind, ids in event["subject"].items():
            assert isinstance(kind, str) and isinstance(ids, list) and all(isinstance(i, str) for i in ids)
    if "metrics" in event:
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in event["metrics"].values())
    for call in event.get("tool_calls", []):
        assert isinstance(call["name"], str) and call["name"]
        assert isinstance(call["call_id"], str) and call["call_id"]
        assert isinstance(call["arguments"], (dict, str))
        if isinstance(call["arguments"], str):
            assert len(call["arguments"].encode()) <= 1024
        if "side_effect" in call:
            assert isinstance(call["side_effect"], bool)
        if "result" in call:
            assert isinstance(call["result"], dict)
    json.dumps(event, allow_nan=False)  # JSON-ready


def validate(event: dict) -> None:
    check_event(event)
    try:
        from semwatch.contract import RunEvent
    except ImportError:  # the shared model is optional for this unit
        return
    RunEvent.model_validate(event)
    RunEvent.model_validate_json(json.dumps(event))


# --------------------------------------------------------------------------- the recorded export


@pytest.fixture(scope="module")
def export() -> dict:
    return decode_export(DATA.read_bytes())


def test_export_maps_to_exact_events(export):
    events, rejected = spans_to_events(export)
    assert events == EXPECTED_EVENTS
    assert rejected == EXPECTED_REJECTED


def test_every_event_passes_the_contract(export):
    events, _ = spans_to_events(export)
    assert events
    for event in events:
        validate(event)


def test_agent_run_grouping_and_tool_attachment(export):
    events, _ = spans_to_events(export)
    runs: dict[str, list[str]] = {}
    for e in events:
        runs.setdefault(e["run_id"], []).append(e["event_id"].split(":")[1])
    # The three chat calls of the agent share the invoke_agent span's id; other runs are traces.
    assert runs[AGENT_SPAN] == ["5fb397be34d26b51", "e457b5a2e4d86bd1", "9c2f8b1a7d6e5f40"]
    assert set(runs) == {AGENT_SPAN, FAQ_TRACE, RATE_TRACE, FILTER_TRACE, TOOLARGS_TRACE}
    tools = [(e["event_id"][-16:], [c["name"] for c in e.get("tool_calls", [])]) for e in events]
    assert tools[:3] == [("5fb397be34d26b51", ["get_order"]), ("e457b5a2e4d86bd1", ["refund_order"]),
                         ("9c2f8b1a7d6e5f40", [])]
    # The agent span's own model and aggregated usage are not a second event.
    assert not any(e["event_id"].endswith(AGENT_SPAN) for e in events)


def test_ignored_spans_produce_nothing(export):
    events, rejected = spans_to_events(export)
    ids = {e["event_id"] for e in events} | {r[0] for r in rejected}
    for ignored in ("d3a1e2f3a4b5c6d7",  # embeddings
                    "00f067aa0ba902b7", "b9c7c989f97918e1", "a0b1c2d3e4f50617",  # HTTP
                    AGENT_SPAN):
        assert not any(i.endswith(ignored) for i in ids)


def test_idempotent_and_does_not_mutate_input(export):
    before = copy.deepcopy(export)
    first = spans_to_events(export)
    second = spans_to_events(export)
    assert first == second
    assert export == before


def test_app_attribute_is_configurable(export):
    events, rejected = spans_to_events(export, app_attribute="deployment.environment.name")
    assert {e["app"] for e in events} == {"prod"}
    # order-service has no such attribute, but its tool span was rejected anyway
    assert len(rejected) == 2


# --------------------------------------------------------------------------- decode_export


def test_decode_export_accepts_bytes_and_str():
    raw = DATA.read_bytes()
    assert decode_export(raw) == decode_export(raw.decode()) == json.loads(raw)
    assert decode_export(b'{"resourceSpans": []}') == {"resourceSpans": []}
    assert spans_to_events(decode_export(b'{"resourceSpans": []}')) == ([], [])


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "empty payload"),
        (b"   \n", "empty payload"),
        (b"\x0a\x8f\x01\x12\xff\xfe", "not UTF-8"),
        (b"{\"resourceSpans\": [", "not JSON"),
        (b"resourceSpans", "not JSON"),
        (b"[1, 2]", "top-level JSON is an array"),
        (b'"x"', "top-level JSON is a string"),
        (b'{"resourceLogs": []}', "OTLP logs export"),
        (b'{"resourceMetrics": []}', "OTLP metrics export"),
        (b'{"event_id": "e1", "run_id": "r1"}', "no resourceSpans field (top-level keys: event_id, run_id)"),
        (b'{"resourceSpans": {}}', "resourceSpans is an object"),
    ],
)
def test_decode_export_errors(raw, message):
    with pytest.raises(ValueError) as info:
        decode_export(raw)
    assert message in str(info.value)


def test_decode_export_rejects_non_bytes():
    with pytest.raises(ValueError, match="must be bytes"):
        decode_export(123)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- small synthetic exports

T0 = 1_763_800_000_000_000_000
TRACE = "11111111111111111111111111111111"


def attr(key, value):
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    elif isinstance(value, list):
        v = {"arrayValue": {"values": [attr("_", x)["value"] for x in value]}}
    elif isinstance(value, dict):
        v = {"kvlistValue": {"values": [attr(k, x) for k, x in value.items()]}}
    else:
        v = {"stringValue": value}
    return {"key": key, "value": v}


def span(span_id, start_s, end_s, parent="", trace=TRACE, name="span", status=None, events=None, **attrs):
    out = {
        "traceId": trace,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(T0 + int(start_s * 1e9)),
        "endTimeUnixNano": str(T0 + int(end_s * 1e9)),
        "attributes": [attr(k.replace("__", "."), v) for k, v in attrs.items()],
        "status": status or {},
    }
    if events:
        out["events"] = events
    return out


def export_of(*spans, service="svc"):
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}],
            }
        ]
    }


def chat(span_id, start_s, end_s, parent="", output_calls=(), trace=TRACE, status=None, events=None, **attrs):
    extra = {"gen_ai__operation__name": "chat", "gen_ai__request__model": "m-1"}
    if output_calls:
        parts = [{"type": "tool_call", "id": cid, "name": "t", "arguments": {}} for cid in output_calls]
        extra["gen_ai__output__messages"] = json.dumps([{"role": "assistant", "parts": parts}])
    extra.update(attrs)
    return span(span_id, start_s, end_s, parent=parent, trace=trace, name="chat m-1", status=status,
                events=events, **extra)


def tool(span_id, start_s, end_s, parent="", call_id=None, name="get_order", **attrs):
    extra = {"gen_ai__operation__name": "execute_tool", "gen_ai__tool__name": name}
    if call_id:
        extra["gen_ai__tool__call__id"] = call_id
    extra.update(attrs)
    return span(span_id, start_s, end_s, parent=parent, name=f"execute_tool {name}", **extra)


def by_span(events):
    return {e["event_id"].split(":")[1]: e for e in events}


def tool_names(event):
    return [c["call_id"] for c in event.get("tool_calls", [])]


def test_tool_call_id_match_beats_time_order():
    events, rejected = spans_to_events(export_of(
        chat("a000000000000001", 0, 1, output_calls=["call_1", "call_2"]),
        tool("b000000000000001", 1.1, 1.2, call_id="call_1"),
        chat("a000000000000002", 1.3, 2.0),
        # started after the second chat ended, but requested by the first
        tool("b000000000000002", 2.1, 2.2, call_id="call_2"),
    ))
    assert rejected == []
    ev = by_span(events)
    assert tool_names(ev["a000000000000001"]) == ["call_1", "call_2"]
    assert "tool_calls" not in ev["a000000000000002"]


def test_tool_falls_back_to_latest_earlier_then_next_model_call():
    events, _ = spans_to_events(export_of(
        tool("b000000000000001", 0.0, 0.1, call_id="early"),   # nothing before it -> next chat
        chat("a000000000000001", 0.2, 1.0),
        chat("a000000000000002", 1.1, 2.0),
        tool("b000000000000002", 2.5, 2.6, call_id="late"),    # latest chat ended before it
        tool("b000000000000003", 1.05, 1.08),                  # between: the first chat; no call id
    ))
    ev = by_span(events)
    assert tool_names(ev["a000000000000001"]) == ["early", "b000000000000003"]
    assert tool_names(ev["a000000000000002"]) == ["late"]


def test_tool_attaches_within_its_run_first():
    agent_a = span("aa00000000000001", 0, 10, name="invoke_agent a",
                   gen_ai__operation__name="invoke_agent", gen_ai__agent__name="a")
    agent_b = span("bb00000000000001", 0, 10, name="invoke_agent b",
                   gen_ai__operation__name="invoke_agent", gen_ai__agent__name="b")
    events, _ = spans_to_events(export_of(
        agent_a, agent_b,
        chat("a000000000000001", 0, 1, parent="aa00000000000001"),
        chat("a000000000000002", 1, 2, parent="bb00000000000001"),
        # the latest chat in the trace is agent b's, but the tool belongs to agent a's run
        tool("b000000000000001", 3, 4, parent="aa00000000000001", call_id="c1"),
    ))
    ev = by_span(events)
    assert ev["a000000000000001"]["run_id"] == "aa00000000000001"
    assert ev["a000000000000001"]["route"] == "a"
    assert ev["a000000000000002"]["run_id"] == "bb00000000000001"
    assert tool_names(ev["a000000000000001"]) == ["c1"]
    assert "tool_calls" not in ev["a000000000000002"]


def test_nested_agents_belong_to_the_outermost_run():
    events, _ = spans_to_events(export_of(
        span("aa00000000000001", 0, 10, name="invoke_agent triage", gen_ai__operation__name="invoke_agent",
             gen_ai__agent__name="triage", semwatch__subject__user_id="u_1"),
        span("aa00000000000002", 1, 9, parent="aa00000000000001", name="invoke_agent refunds",
             gen_ai__operation__name="invoke_agent", gen_ai__agent__name="refunds",
             semwatch__subject__order_id=["#1", "#2"]),
        chat("a000000000000001", 2, 3, parent="aa00000000000002", semwatch__subject__order_id="#2"),
    ))
    (event,) = events
    assert event["run_id"] == "aa00000000000001"
    assert event["route"] == "refunds"  # nearest agent name
    assert event["subject"] == {"user_id": ["u_1"], "order_id": ["#1", "#2"]}


def test_tool_span_with_model_and_no_model_call_becomes_its_own_event():
    events, rejected = spans_to_events(export_of(
        tool("b000000000000001", 0, 0.5, call_id="c9", gen_ai__request__model="m-2",
             gen_ai__tool__call__arguments='{"order_id": "#9"}', gen_ai__tool__call__result="[1, 2]"),
    ))
    assert rejected == []
    (event,) = events
    assert event["model"] == "m-2" and event["run_id"] == TRACE
    assert event["tool_calls"] == [
        {"name": "get_order", "call_id": "c9", "arguments": {"order_id": "#9"}, "result": {"value": [1, 2]}}
    ]
    validate(event)


def test_invoke_agent_with_model_and_no_children_is_a_model_call():
    events, _ = spans_to_events(export_of(
        span("aa00000000000001", 0, 4, name="invoke_agent remote", gen_ai__operation__name="invoke_agent",
             gen_ai__request__model="agent-model", gen_ai__usage__input_tokens=10, gen_ai__usage__output_tokens=5),
    ))
    (event,) = events
    assert (event["run_id"], event["model"], event["input_tokens"]) == ("aa00000000000001", "agent-model", 10)


def test_model_attribute_without_operation_is_a_model_call_but_embeddings_are_not():
    events, rejected = spans_to_events(export_of(
        span("a000000000000001", 0, 1, gen_ai__response__model="r-1", gen_ai__request__model="q-1"),
        span("a000000000000002", 0, 1, gen_ai__operation__name="embeddings", gen_ai__request__model="e-1"),
        span("a000000000000003", 0, 1, gen_ai__operation__name="create_agent", gen_ai__request__model="c-1"),
        span("a000000000000004", 0, 1, gen_ai__operation__name="text_completion", gen_ai__request__model="t-1"),
        span("a000000000000005", 0, 1, gen_ai__operation__name="generate_content", gen_ai__request__model="g-1"),
    ))
    assert [e["model"] for e in events] == ["r-1", "t-1", "g-1"]
    assert rejected == []


def test_errors_refusals_and_status_codes():
    events, _ = spans_to_events(export_of(
        chat("a000000000000001", 0, 1, status={"code": 2, "message": "boom"}),
        chat("a000000000000002", 0, 2, status={"code": "STATUS_CODE_ERROR"}, error__type="timeout"),
        chat("a000000000000003", 0, 3, status={"code": 1}, gen_ai__response__finish_reasons="content_filter"),
    ))
    ev = by_span(events)
    assert ev["a000000000000001"]["error_type"] == "error"
    assert ev["a000000000000002"]["error_type"] == "timeout"
    assert "error_type" not in ev["a000000000000003"]
    assert ev["a000000000000003"]["refusal"] is True
    assert "refusal" not in ev["a000000000000001"]


def test_messages_from_span_event_and_truncation():
    long = "ü" * 3000  # 6000 UTF-8 bytes
    details = {
        "timeUnixNano": str(T0),
        "name": "gen_ai.client.inference.operation.details",
        "attributes": [
            attr("gen_ai.input.messages", json.dumps([
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "parts": [{"type": "text", "content": "second"}, {"type": "text", "content": long}]},
            ])),
            attr("gen_ai.output.messages", json.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": "answer"}], "finish_reason": "length"},
            ])),
        ],
    }
    (event,), _ = spans_to_events(export_of(chat("a000000000000001", 0, 1, events=[details])))
    assert event["request_text"].startswith("second\nüü")
    assert len(event["request_text"].encode()) <= MAX_TEXT_BYTES
    assert len(event["request_text"].encode()) >= MAX_TEXT_BYTES - 1  # cut on a character boundary
    assert event["response_text"] == "answer"
    assert event["finish_reason"] == "length"  # from the output message when the attribute is absent


def test_structured_values_subject_metrics_and_flags():
    events, _ = spans_to_events(export_of(
        chat("a000000000000001", 0, 1.5,
             semwatch__subject__order_id=["#1", "#1", 7],
             semwatch__subject__user_id="u_1",
             semwatch__metric__retrieved_docs=4,
             semwatch__metric__bad=True,
             semwatch__request_flagged="true",
             gen_ai__conversation__id="conv-1",
             gen_ai__tool__call__arguments={"ignored": "on chat spans"},
             gen_ai__usage__input_tokens=-5,
             gen_ai__usage__output_tokens=3),
        tool("b000000000000001", 2, 3, gen_ai__tool__call__arguments={"order_id": "#1", "qty": 2},
             semwatch__tool__side_effect="false"),
    ))
    (event,) = events
    assert event["subject"] == {"order_id": ["#1", "7"], "user_id": ["u_1"]}
    assert event["metrics"] == {"retrieved_docs": 4}
    assert event["request_flagged"] is True
    assert event["conversation_id"] == "conv-1"
    assert "input_tokens" not in event and event["output_tokens"] == 3
    assert event["latency_s"] == 1.5
    assert event["tool_calls"] == [{"name": "get_order", "call_id": "b000000000000001",
                                    "arguments": {"order_id": "#1", "qty": 2}, "side_effect": False}]
    validate(event)


def test_base64_and_uppercase_ids_are_normalised():
    trace_b64 = base64.b64encode(bytes.fromhex("ab" * 16)).decode()
    span_b64 = base64.b64encode(bytes.fromhex("cd" * 8)).decode()
    events, _ = spans_to_events(export_of(
        chat(span_b64, 0, 1, trace=trace_b64),
        chat("EF" * 8, 0, 1, trace=TRACE.upper()),
    ))
    assert {e["event_id"] for e in events} == {f"{'ab' * 16}:{'cd' * 8}", f"{TRACE}:{'ef' * 8}"}


def test_odd_input_is_skipped_and_reported_never_raised():
    good = chat("a000000000000001", 0, 1)
    no_end = chat("a000000000000002", 0, 1)
    del no_end["endTimeUnixNano"]
    bad_id = chat("nothex", 0, 1)
    zero_trace = chat("a000000000000003", 0, 1, trace="0" * 32)
    garbage_attrs = chat("a000000000000004", 0, 1)
    garbage_attrs["attributes"] += [None, 5, {"key": 3}, {"key": "x", "value": {"intValue": "abc"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1e3"}},
                                    {"key": "y", "value": {"arrayValue": {"values": "nope"}}}]
    weird_time = chat("a000000000000005", 0, 1)
    weird_time["startTimeUnixNano"] = "soon"
    loop_a = chat("a000000000000006", 0, 1, parent="a000000000000007")
    loop_b = span("a000000000000007", 0, 1, parent="a000000000000006", gen_ai__operation__name="invoke_agent")
    doc = export_of(good, dict(good), no_end, bad_id, zero_trace, garbage_attrs, weird_time, loop_a, loop_b,
                    "not a span", None, {"spanId": 1})
    doc["resourceSpans"] += [None, {"resource": None, "scopeSpans": "x"}, {"scopeSpans": [None, {"spans": {}}]},
                             {"scopeSpans": [{"spans": [chat("a000000000000008", 0, 1)]}]}]

    events, rejected = spans_to_events(doc)

    ev = by_span(events)
    assert set(ev) == {"a000000000000001", "a000000000000004", "a000000000000005", "a000000000000006"}
    assert ev["a000000000000004"]["input_tokens"] == 1000
    assert "latency_s" not in ev["a000000000000005"]
    assert ev["a000000000000006"]["run_id"] == "a000000000000007"
    for event in events:
        validate(event)
    reasons = dict(rejected)
    assert reasons[f"{TRACE}:a000000000000001"].startswith("duplicate span")
    assert "no endTimeUnixNano" in reasons[f"{TRACE}:a000000000000002"]
    assert "invalid spanId" in reasons["resourceSpans[0].scopeSpans[0].spans[3]"]
    assert "invalid traceId" in reasons["resourceSpans[0].scopeSpans[0].spans[4]"]
    assert reasons["resourceSpans[0].scopeSpans[0].spans[9]"] == "span is not an object"
    assert reasons["resourceSpans[0].scopeSpans[0].spans[10]"] == "span is not an object"
    assert reasons["resourceSpans[1]"] == "not an object"
    assert reasons["resourceSpans[2].scopeSpans"] == "not an array"
    assert reasons["resourceSpans[3].scopeSpans[0]"].startswith("not an object")
    assert reasons["resourceSpans[3].scopeSpans[1]"].startswith("not an object")
    assert "'service.name' resource attribute" in reasons[f"{TRACE}:a000000000000008"]
    assert all(isinstance(k, str) and isinstance(r, str) for k, r in rejected)


def test_export_without_resource_spans_is_reported():
    assert spans_to_events({}) == ([], [("resourceSpans", "missing or not an array")])
    with pytest.raises(ValueError):
        spans_to_events([])  # type: ignore[arg-type]


def test_implausible_values_are_dropped_or_rejected():
    long_start = chat("a000000000000001", 0, 1, gen_ai__usage__input_tokens=2 * 10**9)
    long_start["startTimeUnixNano"] = "1"  # a 56-year span: no latency
    events, rejected = spans_to_events(export_of(
        long_start,
        chat("a000000000000002", 0, 1, gen_ai__request__model="m" * 300),
        chat("a000000000000003", 0, 1, semwatch__route="r" * 257),
        chat("a000000000000004", 2, 3),
        tool("b000000000000001", 4, 5, name="t" * 300),
        tool("b000000000000002", 4, 5, gen_ai__tool__call__arguments='{"amount": 1e400, "x": NaN}'),
    ))
    ev = by_span(events)
    assert set(ev) == {"a000000000000001", "a000000000000004"}
    assert "latency_s" not in ev["a000000000000001"] and "input_tokens" not in ev["a000000000000001"]
    assert ev["a000000000000004"]["tool_calls"][0]["arguments"] == {"amount": None, "x": None}
    reasons = dict(rejected)
    assert "model is longer than 256 characters" in reasons[f"{TRACE}:a000000000000002"]
    assert "route is longer than 256 characters" in reasons[f"{TRACE}:a000000000000003"]
    assert "longer than 256 characters" in reasons[f"{TRACE}:b000000000000001"]
    for event in events:
        validate(event)


def test_mutated_exports_never_raise(export):
    """Property check: junk anywhere inside the recorded export yields valid events or reports."""
    import random

    junk = [None, 1, -1, 1.5, "x", "", [], {}, [None], {"a": None}, True, "1e400", "NaN",
            {"intValue": "9" * 40}, {"doubleValue": "Infinity"}, {"arrayValue": None},
            {"kvlistValue": {"values": [None]}}, {"stringValue": '{"a": NaN, "b": 1e999}'},
            {"stringValue": '[{"role": "user", "parts": 5}]'}, {"stringValue": "x" * 300}]

    def paths(node, prefix=()):
        yield prefix
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            yield from paths(child, prefix + (key,))

    all_paths = [p for p in paths(export) if p]
    rnd = random.Random(1234)
    for _ in range(400):
        doc = copy.deepcopy(export)
        for _ in range(rnd.randint(1, 4)):
            path = rnd.choice(all_paths)
            node = doc
            try:
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = rnd.choice(junk)
            except (KeyError, IndexError, TypeError):
                pass
        events, rejected = spans_to_events(doc)
        for event in events:
            validate(event)
        assert not any("unreadable" in reason for _, reason in rejected)


def test_every_provider_refusal_signal_is_ground_truth():
    """Anthropic's stop_reason "refusal", Gemini's SAFETY (any position of finish_reasons) and
    OpenAI's message.refusal all set refusal: true; an ordinary stop sets nothing."""
    refusal_part = json.dumps([{"role": "assistant", "parts": [{"type": "refusal", "content": "I can't help."}]}])
    events, _ = spans_to_events(export_of(
        chat("b000000000000001", 0, 1, gen_ai__response__finish_reasons="refusal"),
        chat("b000000000000002", 0, 2, gen_ai__response__finish_reasons=["STOP", "SAFETY"]),
        chat("b000000000000003", 0, 3, gen_ai__output__messages=refusal_part),
        chat("b000000000000004", 0, 4, gen_ai__response__finish_reasons="stop"),
    ))
    ev = by_span(events)
    assert [ev[f"b00000000000000{i}"].get("refusal") for i in (1, 2, 3, 4)] == [True, True, True, None]
    assert ev["b000000000000003"]["response_text"] == "I can't help."
