"""``malformed_tool_call``: a segment's tool calls come with broken arguments far more often than usual.

After a model switch or a prompt change, an agent starts sending tool arguments that no tool can
use: truncated JSON text, placeholder ids copied from the tool description (``"<order_id>"``,
``"string"``, ``"TODO"``), empty ids, missing required fields or wrong types. The tools refuse
them, the agent retries or gives up, and nothing on the uptime dashboards moves.

A call is **malformed** when, first reason first:

1. ``invalid_json``: its arguments were not a JSON object (``ToolCall.arguments_error``: the text
   did not parse, or parsed to an array or a string);
2. ``placeholder``: a string argument is a template placeholder (``<order_id>``, ``{order_id}``,
   ``${ORDER_ID}``, ``TODO``, ``...``) or an id argument (an entity argument of the tool map, or a
   ``*_id``) is empty, null, or a stand-in (``string``, ``id``, ``null``, ``example``, its own name);
3. ``missing_required`` / ``wrong_type`` / ``not_in_enum`` / ``unexpected_field``: the arguments
   break the tool's ``parameters`` JSON Schema in ``config/tools.yaml`` (the subset of
   :mod:`semwatch.engine.json_schema`);
4. ``tool_error``: the tool answered with an error (``result.error``, or ``error_type`` on the call),
   when ``count_tool_errors`` is on: what a broken argument usually causes, even when the arguments
   looked fine to the checks above.

The statistic is the share of **calls** that are malformed, per segment (``app, route`` by default:
a model switch moves the route's calls to a new model, whose own segment would have no baseline),
judged by the sequential share test of :mod:`semwatch.engine.share` against the segment's own learnt
share. Per call, not per event: every malformed call counts (an event whose three parallel calls are
all truncated is worse than one with one bad call of three), the share does not depend on how many
calls a framework packs into one step, and "x % of tool calls" is what a tool owner reads; the
test's ``min_runs`` keeps one looping run from paging alone. The rest of a malformed event still
goes to every other detector. The incident names the tools and fields (counts by problem since the
rise began) and redacted examples.

>>> from semwatch.contract import ToolCall
>>> from semwatch.engine.tools import ToolMap
>>> call_problem(ToolCall(name="cancel_order", arguments={"order_id": "<order_id>"}), ToolMap(),
...              MalformedToolCallParams(name="m"))
('order_id', 'placeholder', '<order_id>')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import Field

from semwatch.contract import RunEvent, ToolCall, redact
from semwatch.engine.detector import Context, register, unit_event
from semwatch.engine.json_schema import problems as schema_problems
from semwatch.engine.share import ShareParams, ShareSpikeDetector, ShareState
from semwatch.engine.state import state_type
from semwatch.engine.tools import ToolMap

#: A whole string that is a template slot: <order_id>, {order_id}, {{order_id}}, ${ORDER_ID}, [ORDER_ID].
TEMPLATE_SLOT = re.compile(r"^\s*(<[^<>]{1,64}>|\{\{?\s*[A-Za-z_][\w.\- ]{0,63}\s*\}?\}|\$\{[A-Za-z_]\w{0,63}\}"
                           r"|\[[A-Z][A-Z0-9_ ]{1,63}\])\s*$")
#: Whole strings no tool argument means literally.
UNMISTAKABLE = frozenset({"todo", "tbd", "fixme", "...", "…", "<placeholder>", "placeholder"})
_MAX_REASONS = 12


class MalformedToolCallParams(ShareParams):
    type: str = "malformed_tool_call"
    group_by: tuple[str, ...] = ("app", "route")
    severity: str = Field(default="SEV-2", pattern=r"^SEV-[123]$")
    # Material: the share of malformed calls must exceed the baseline by 5 points ... (raise: fewer pages)
    min_increase: float = Field(default=0.05, gt=0, lt=1)
    # ... and be at least 3 x it (agents' calls fail now and then; a broken model fails many).
    min_ratio: float = Field(default=3.0, ge=1)
    clear_increase: float = Field(default=0.025, ge=0, lt=1)
    # The share assumed for a brand-new segment.
    prior_rate: float = Field(default=0.01, gt=0, lt=1)
    # Check the arguments against the tool's `parameters` schema in tools.yaml.
    check_schema: bool = True
    # Look for template placeholders, and empty or stand-in ids.
    check_placeholders: bool = True
    # Id values that are stand-ins, compared lower-cased (besides empty, null and the argument's name).
    placeholder_ids: tuple[str, ...] = ("string", "str", "id", "null", "none", "undefined", "example",
                                        "unknown", "n/a", "na", "xxx", "0000", "tbd", "todo", "...")
    # A tool's own error counts as a malformed call (raise it off when tools fail for other reasons).
    count_tool_errors: bool = True


@state_type("malformed_tool_call")
@dataclass(slots=True)
class MalformedState(ShareState):
    # "tool field problem" -> malformed calls since the rise began (at most 12 keys)
    reasons: dict = field(default_factory=dict)


def _strings(value: Any, path: str, depth: int = 0):
    """(path, string) for every string in the arguments, two levels deep at most."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict) and depth < 2:
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(value, list) and depth < 2:
        for i, v in enumerate(value[:20]):
            yield from _strings(v, f"{path}[{i}]", depth + 1)


def _id_args(call: ToolCall, tools: ToolMap, schema: Optional[dict]) -> list[str]:
    names = [a for a in call.arguments if isinstance(a, str) and tools.is_entity_arg(call.name, a)]
    for a in (schema or {}).get("required") or ():
        if a not in names and (a.endswith("_id") or tools.is_entity_arg(call.name, a)):
            names.append(a)
    return names


def call_problem(call: ToolCall, tools: ToolMap, p: MalformedToolCallParams) -> Optional[tuple[str, str, str]]:
    """``(field, problem, example)`` of a malformed call (the first reason), or None."""
    if call.arguments_error is not None:
        return "arguments", "invalid_json", call.arguments_raw or ""
    schema = tools.parameters(call.name) if p.check_schema else None
    if p.check_placeholders:
        for path, text in _strings(call.arguments, ""):
            if TEMPLATE_SLOT.match(text) or text.strip().lower() in UNMISTAKABLE:
                return path, "placeholder", text
        for arg in _id_args(call, tools, schema):
            value = call.arguments.get(arg)
            if value is None:
                return arg, "placeholder", "null" if arg in call.arguments else "(missing)"
            if isinstance(value, str):
                v = value.strip().lower()
                if not v:
                    return arg, "placeholder", "(empty)"
                if v in p.placeholder_ids or v in (arg.lower(), arg[:-3].lower()):
                    return arg, "placeholder", value
    if schema is not None:
        found = schema_problems(call.arguments, schema)
        if found:
            path, kind, detail = found[0]
            return path, kind, detail
    if p.count_tool_errors:
        error = call.error_type
        if error is None and isinstance(call.result, dict) and call.result.get("error"):
            error = str(call.result["error"])
        if error:
            return "result", "tool_error", error
    return None


@register
class MalformedToolCall(ShareSpikeDetector):
    """A rise in the share of a segment's tool calls whose arguments no tool can use."""

    type_name = "malformed_tool_call"
    kind = "malformed_tool_call"
    Params = MalformedToolCallParams
    params: MalformedToolCallParams
    what = "malformed"
    unit = "tool calls"
    tuning_space = {"min_increase": [0.025, 0.05, 0.10], "false_alarm_days": [30.0, 90.0, 365.0],
                    "count_tool_errors": [True, False]}

    def _new_state(self) -> MalformedState:
        return MalformedState(segment={})

    def outcomes(self, event: RunEvent, st: ShareState, ctx: Context) -> Optional[list[tuple[bool, str]]]:
        if not event.tool_calls:
            return None
        assert isinstance(st, MalformedState)
        tools = self.env.tools if self.env.tools is not None else _DEFAULT_TOOLS
        out = []
        for call in event.tool_calls:
            problem = call_problem(call, tools, self.params)
            if problem is None:
                out.append((False, ""))
                continue
            path, kind, example = problem
            if self.learning(st):
                st.reasons = {}
            key = f"{call.name}.{path} {kind}"
            if key in st.reasons or len(st.reasons) < _MAX_REASONS:
                st.reasons[key] = st.reasons.get(key, 0) + 1
            out.append((True, f"{call.name}.{path}: {kind} {redact(example, 60)!r}"[:160]))
        return out

    def extra_evidence(self, st: ShareState) -> dict[str, Any]:
        reasons = getattr(st, "reasons", {})
        return {"malformed_by_problem": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))}

    def describe(self, st: ShareState, rate: float, p0: float, action: str) -> str:
        text = super().describe(st, rate, p0, action)
        reasons = getattr(st, "reasons", {})
        if action == "trigger" and reasons:
            top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            text += "; " + ", ".join(f"{k} ({n})" for k, n in top)
        return text

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"min_baseline_n": 100}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        """An hour of order lookups with an occasional tool error, then a third of the calls broken."""
        t0 = 1_767_600_000.0

        def call(i: int, broken: bool) -> dict:
            if not broken:
                result = {"error": "not found"} if i % 150 == 0 else {"status": "ok"}
                return {"name": "get_order", "call_id": f"c{i}", "arguments": {"order_id": f"#W{i}"},
                        "result": result}
            return {"name": "cancel_order", "call_id": f"c{i}",
                    "arguments": ['{"order_id": "#W1", "reas', {"order_id": "<order_id>"}, {"order_id": ""}][i // 3 % 3]}

        normal = [unit_event(f"n{i}", f"r{i}", t0 + 2.0 * i, conversation_id=f"c{i % 97}",
                             tool_calls=[call(i, False)]) for i in range(1800)]
        anomalous = [unit_event(f"a{i}", f"ra{i}", t0 + 3600 + 2.0 * i, conversation_id=f"ca{i}",
                                tool_calls=[call(i, i % 3 == 0)]) for i in range(300)]
        return normal, anomalous


_DEFAULT_TOOLS = ToolMap()
