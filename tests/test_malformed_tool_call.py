"""Malformed tool calls: string arguments are accepted (never dead-lettered), and a rise in the share
of broken calls per segment is an incident naming the tool, the field and a redacted example."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from detectors.malformed_tool_call import MalformedToolCall, MalformedToolCallParams, call_problem
from semwatch.config import ConfigError, load_config
from semwatch.contract import RunEvent, ToolCall, parse_ts
from semwatch.engine.detector import DetectorEnv
from semwatch.engine.tools import ToolMap
from semwatch.ingest.otlp import spans_to_events
from semwatch.ingest.validation import validate_record
from tests.support import replay_one
from tests.test_otel import chat as chat_span
from tests.test_otel import export_of, tool

REPO = Path(__file__).resolve().parent.parent
T0 = 1_767_600_000.0
SCHEMA = {"type": "object", "required": ["order_id", "reason"],
          "properties": {"order_id": {"type": "string"}, "reason": {"type": "string",
                                                                   "enum": ["customer_request", "fraud"]},
                         "notify": {"type": "boolean"}}}
TOOLS = ToolMap.model_validate({"tools": {"cancel_order": {"side_effect": True, "parameters": SCHEMA}}})
PARAMS = MalformedToolCallParams(name="malformed")


def event(i: int, ts: float, calls: list[dict], **extra) -> dict:
    return {"schema_version": "1", "event_id": f"e{i}", "run_id": f"r{i}", "ts": ts, "app": "order-agent",
            "route": "orders", "model": "m", "conversation_id": f"c{i}", "tool_calls": calls, **extra}


# -- the contract: arguments as JSON text ------------------------------------------------------------
def test_string_arguments_are_parsed_or_kept_as_a_malformed_call_not_dead_lettered():
    raw = json.dumps(event(1, T0, [
        {"name": "get_order", "call_id": "a", "arguments": '{"order_id": "#W1"}'},
        {"name": "cancel_order", "call_id": "b", "arguments": '{"order_id": "#W1", "reas'},
        {"name": "cancel_order", "call_id": "c", "arguments": '["#W1"]'},
    ], input_tokens=900, output_tokens=40, cost_usd=0.01)).encode()
    verdict = validate_record(raw, 1 << 20)
    assert verdict.reason is None, verdict.detail  # was: schema: tool_calls.1.arguments: Input should be an object
    calls = verdict.event.tool_calls
    assert calls[0].arguments == {"order_id": "#W1"} and calls[0].arguments_error is None
    assert calls[1].arguments == {} and calls[1].arguments_error.startswith("not valid JSON")
    assert calls[1].arguments_raw == '{"order_id": "#W1", "reas'
    assert calls[2].arguments_error == "a JSON array, not an object"
    # the rest of the event is intact: tokens and cost still reach the other detectors
    assert (verdict.event.input_tokens, verdict.event.cost_usd) == (900, 0.01)


def test_raw_arguments_are_bounded():
    call = ToolCall(name="t", arguments="{" + "x" * 5000)
    assert call.arguments_error and len(call.arguments_raw) == 1024


def test_otlp_passes_unparseable_arguments_on_as_text_instead_of_empty_arguments():
    events, rejected = spans_to_events(export_of(
        chat_span("a000000000000001", 0, 1),
        tool("b000000000000001", 2, 3, name="cancel_order", gen_ai__tool__call__arguments='{"order_id": "#W'),
    ))
    (ev,) = events
    assert ev["tool_calls"][0]["arguments"] == '{"order_id": "#W'
    assert rejected == []
    call = RunEvent.model_validate(ev).tool_calls[0]
    assert call.arguments_error and call_problem(call, TOOLS, PARAMS)[1] == "invalid_json"


# -- what counts as malformed --------------------------------------------------------------------------
@pytest.mark.parametrize("arguments, expected", [
    ('{"order_id": "#W1", "reason": "fra', ("arguments", "invalid_json")),
    ({"order_id": "<order_id>", "reason": "fraud"}, ("order_id", "placeholder")),
    ({"order_id": "{{order_id}}", "reason": "fraud"}, ("order_id", "placeholder")),
    ({"order_id": "", "reason": "fraud"}, ("order_id", "placeholder")),
    ({"order_id": None, "reason": "fraud"}, ("order_id", "placeholder")),
    ({"order_id": "string", "reason": "fraud"}, ("order_id", "placeholder")),
    ({"order_id": "#W1", "reason": "TODO"}, ("reason", "placeholder")),
    ({"order_id": "#W1"}, ("reason", "missing_required")),
    ({"reason": "fraud"}, ("order_id", "placeholder")),  # a required id missing is a null id
    ({"order_id": 17, "reason": "fraud"}, ("order_id", "wrong_type")),
    ({"order_id": "#W1", "reason": "because"}, ("reason", "not_in_enum")),
    ({"order_id": "#W1", "reason": "fraud"}, None),
    ({"order_id": "#W1", "reason": "fraud", "notify": True}, None),
])
def test_call_problems(arguments, expected):
    found = call_problem(ToolCall(name="cancel_order", arguments=arguments), TOOLS, PARAMS)
    assert (found[:2] if found else None) == expected


def test_tool_errors_count_unless_switched_off():
    failed = ToolCall(name="get_order", arguments={"order_id": "#W1"}, result={"error": "order not found"})
    errored = ToolCall(name="get_order", arguments={"order_id": "#W1"}, error_type="ValueError")
    assert call_problem(failed, TOOLS, PARAMS)[1:] == ("tool_error", "order not found")
    assert call_problem(errored, TOOLS, PARAMS)[1] == "tool_error"
    quiet = PARAMS.model_copy(update={"count_tool_errors": False})
    assert call_problem(failed, TOOLS, quiet) is None


def test_a_tool_schema_is_checked_at_config_load_with_file_and_line(tmp_path):
    (tmp_path / "semwatch.yaml").write_text("detectors: []\n")
    (tmp_path / "tools.yaml").write_text(
        "tools:\n  cancel_order:\n    side_effect: true\n    parameters:\n      type: object\n"
        "      properties:\n        order_id: {type: text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert "tools.yaml:4: tools.cancel_order.parameters" in str(err.value)
    assert "properties.order_id.type: unknown type 'text'" in str(err.value)


# -- the detector -----------------------------------------------------------------------------------------
def traffic(start: float, seconds: float, per_s: float, seed: int, broken: float = 0.0,
            id0: int = 0) -> list[dict]:
    """Order-agent steps (one or two calls each) with 0.5 % ordinary tool errors; a share ``broken``
    of the calls truncated, placeholders or empty ids."""
    rng = random.Random(seed)
    out, t, i = [], start, id0
    bad = ['{"order_id": "#W12', {"order_id": "<order_id>", "reason": "fraud"},
           {"order_id": "", "reason": "fraud"}]
    while True:
        t += rng.expovariate(per_s)
        if t >= start + seconds:
            return out
        calls = []
        for j in range(1 if rng.random() < 0.8 else 2):
            if rng.random() < broken:
                calls.append({"name": "cancel_order", "call_id": f"k{i}{j}", "arguments": rng.choice(bad)})
            else:
                result = {"error": "upstream timeout"} if rng.random() < 0.005 else {"status": "ok"}
                calls.append({"name": "cancel_order", "call_id": f"k{i}{j}", "result": result,
                              "arguments": {"order_id": f"#W{rng.randrange(10**5)}", "reason": "fraud"}})
        out.append(event(i, t, calls))
        i += 1


def run(events: list[dict], tools: ToolMap = TOOLS, **params) -> list:
    return replay_one(MalformedToolCall, {"name": "malformed-tool-calls", **params}, events, DetectorEnv(tools=tools))


def test_a_model_switch_that_breaks_a_fifth_of_the_calls_is_found_fast_and_explained():
    onset = T0 + 3 * 3600
    events = (traffic(T0, 3 * 3600, 0.3, seed=1) + traffic(onset, 1800, 0.3, seed=2, broken=0.2, id0=10**6)
              + traffic(onset + 1800, 3600, 0.3, seed=3, id0=2 * 10**6))
    out = run(events)
    triggers = [i for i in out if i.event_action == "trigger"]
    assert len(triggers) == 1, [i.summary for i in out]
    inc = triggers[0]
    assert inc.kind == "malformed_tool_call" and inc.segment == {"app": "order-agent", "route": "orders"}
    assert 0 <= parse_ts(inc.detected_at) - onset <= 600
    assert "tool calls malformed" in inc.summary and "cancel_order." in inc.summary
    problems = inc.evidence["malformed_by_problem"]
    assert set(problems) <= {"cancel_order.arguments invalid_json", "cancel_order.order_id placeholder"}
    assert any("'<order_id>'" in d or "'(empty)'" in d or '"#W12' in d for d in inc.evidence["details"])
    resolves = [i for i in out if i.event_action == "resolve"]
    # the evidence has to drain (sequential test) before the resolve: within half an hour
    assert resolves and parse_ts(resolves[0].detected_at) <= onset + 1800 + 1800


def test_ordinary_tool_errors_alone_do_not_page():
    assert run(traffic(T0, 12 * 3600, 0.3, seed=4)) == []


def test_every_malformed_call_of_an_event_counts():
    """Per call: three broken parallel calls weigh three times one."""
    p = MalformedToolCallParams(name="m")
    det = MalformedToolCall(p, DetectorEnv(tools=TOOLS))
    st = det._new_state()
    calls = [{"name": "cancel_order", "call_id": str(j), "arguments": "{"} for j in range(3)]
    calls.append({"name": "cancel_order", "call_id": "ok", "arguments": {"order_id": "#W1", "reason": "fraud"}})
    outcomes = det.outcomes(RunEvent.model_validate(event(1, T0, calls)), st, None)
    assert [hit for hit, _ in outcomes] == [True, True, True, False]


def test_the_rest_of_a_malformed_event_still_reaches_the_other_detectors():
    config = load_config(REPO / "config")
    engine = config.build_engine()
    e = event(1, T0, [{"name": "cancel_order", "call_id": "a", "arguments": '{"order_id": "#W9'},
                      {"name": "refund_order", "call_id": "b", "side_effect": True,
                       "arguments": {"order_id": "#W7", "user_id": "u_2", "amount": 40.0}}],
              subject={"user_id": ["u_1"], "order_id": ["#W1"]})
    out = engine.process(RunEvent.model_validate(e))
    assert [i.kind for i in out if i.event_action == "trigger"] == ["wrong_entity_action"]


def test_the_shipped_config_runs_it_per_route():
    config = load_config(REPO / "config")
    (p,) = [p for p in config.detector_params if p.type == "malformed_tool_call"]
    assert p.group_by == ("app", "route")
    tools = yaml.safe_load((REPO / "config" / "tools.yaml").read_text())["tools"]
    assert tools["refund_order"]["parameters"]["required"]
