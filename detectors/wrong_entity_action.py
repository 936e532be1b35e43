"""``wrong_entity_action``: an agent's side-effecting tool call on an entity its run is not about.

A run declares its scope in ``subject`` (``{"user_id": ["u_17"], "order_id": ["#W1"]}``), possibly
only on its first event. A side-effecting call (see :mod:`semwatch.engine.tools`) whose entity
argument names an id of a type the subject lists, but not one of its ids, acts on the wrong entity:
refunding another customer's order, emailing another user.

- A type the subject does not list is not checked (``strict: true`` checks it too, against ids the
  run saw in its results). A run without any ``subject`` is never checked. A listed type with an
  empty list is checked: the run may only act on what its reads return.
- ``widen_from_results`` (default on): ids in the run's *earlier* tool results widen the scope
  (``search_orders(user_id=u_17)`` returns the user's orders, and refunding one of them is fine).
  Only results of calls that themselves stayed in scope widen it, so ``get_order("#W9")`` on a
  stranger's order does not launder ``#W9``. Results widen for later calls of the same event too.

One incident per segment (``group_by``, default app and route), opened at the first offending
event (SEV-1 when the tool moves money, else ``severity``): later offending runs of the segment join
it (a bounded list of run ids and offending calls, and a count) instead of paging again, and raise
its severity one level at each of ``escalate_runs`` (the trigger is re-sent, same incident, new
severity). A person has to look at it, but an alert open forever is worse: it resolves by itself
``auto_resolve_s`` of event time after the last offending run (0 = never).

The per-run scope tracking (:class:`RunScopeMixin`) is shared with ``wrong_entity_rate``.
Evidence names the tool, call id, argument name and a hash of the entity id, never the id itself or
other arguments.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from pydantic import Field

from semwatch.contract import RunEvent, ToolCall
from semwatch.engine.detector import Context, Detector, DetectorParams, SegmentState, escalate, register
from semwatch.engine.formatting import segment_label, window_label
from semwatch.engine.state import state_type
from semwatch.engine.tools import ToolMap, ids_in_result
from semwatch.engine.tuning import ProbeUnavailable

RUN_MARK = "\x00run"  # first value of a run state's segment: never collides with label values
MAX_EVIDENCE_CALLS = 5
_SAFE_CALL_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def hash_entity(value: str) -> str:
    """A short, stable, non-reversible stand-in for an entity id in evidence.

    >>> hash_entity("#W1234567")
    'sha256:8ed3ce7235e2'
    """
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


# -- per-run scope -----------------------------------------------------------------------------------
@state_type("wrong_entity_run")
@dataclass(slots=True)
class RunState(SegmentState):
    subject: dict[str, list[str]] = field(default_factory=dict)  # declared scope, union over events
    seen: dict[str, list[str]] = field(default_factory=dict)  # ids from earlier in-scope results
    n_ids: int = 0  # bound on subject + seen
    flagged_at: Optional[float] = None  # when the run first acted out of scope (counted once)
    offenses: int = 0


@state_type("wrong_entity_incident")
@dataclass(slots=True)
class WrongEntityIncident(SegmentState):
    """The open incident of one segment: every offending run of it, bounded."""

    opened_at: float = 0.0
    last_at: float = 0.0
    resolve_at: Optional[float] = None
    severity: str = "SEV-2"
    runs: int = 0  # offending runs
    offenses: int = 0  # out-of-scope entity arguments
    money_moving: bool = False
    run_ids: list = field(default_factory=list)
    event_ids: list = field(default_factory=list)
    calls: list = field(default_factory=list)


@dataclass
class CallCheck:
    call: ToolCall
    side_effect_source: str
    money_moving: bool
    checked: bool  # at least one entity argument was compared against the scope
    offending: list[tuple[str, str, str]]  # (argument, entity type, id)


class RunScopeParams(DetectorParams):
    strict: bool = False
    widen_from_results: bool = True
    max_scope_ids: int = Field(default=1000, ge=1, le=100000)


def run_segment(event: RunEvent) -> dict[str, str]:
    """Runs are keyed by app + run id: a run belongs to one app, and apps are the partition key."""
    return {"_": RUN_MARK, "app": event.app, "run_id": event.run_id}


class RunScopeMixin:
    """Per-run scope tracking shared by both wrong-entity detectors."""

    params: RunScopeParams
    tools: ToolMap

    def _add_ids(self, run: RunState, target: dict[str, list[str]], pairs) -> None:
        cap = self.params.max_scope_ids
        for etype, ident in pairs:
            ids = target.setdefault(etype, [])
            if ident in ids:
                continue
            if run.n_ids >= cap:
                return
            ids.append(ident)
            run.n_ids += 1

    def _scope_key(self) -> tuple:
        p = self.params
        return ("wrong_entity_scope", p.strict, p.widen_from_results, p.max_scope_ids, id(self.tools))

    def _check_event(self, run: RunState, event: RunEvent) -> list[CallCheck]:
        """Update the run's scope with the event and check its side-effecting calls, in order."""
        if event.subject:
            for etype, ids in event.subject.items():
                run.subject.setdefault(etype, [])  # a listed type is checked even when empty
                self._add_ids(run, run.subject, ((etype, i) for i in ids))
        strict, widen = self.params.strict, self.params.widen_from_results
        out: list[CallCheck] = []
        for call in event.tool_calls or ():
            side, source = self.tools.side_effect(call)
            offending: list[tuple[str, str, str]] = []
            checked = False
            if run.subject:
                for arg, etype, ident in self.tools.entity_values(call):
                    allowed = run.subject.get(etype)
                    if allowed is None and not strict:
                        continue
                    checked = True
                    if (allowed and ident in allowed) or ident in run.seen.get(etype, ()):
                        continue
                    offending.append((arg, etype, ident))
            if side:
                out.append(CallCheck(call, source, self.tools.money_moving(call), checked, offending))
            if widen and not offending and call.result is not None:
                wanted = None if strict or not run.subject else set(run.subject)
                self._add_ids(run, run.seen, ids_in_result(call.result, wanted))
        return out


def _call_id(call: ToolCall) -> Optional[str]:
    if call.call_id is None:
        return None
    return call.call_id if _SAFE_CALL_ID.match(call.call_id) else hash_entity(call.call_id)


def _evidence_calls(checks: list[CallCheck]) -> list[dict[str, Any]]:
    out = []
    for c in checks:
        for arg, etype, ident in c.offending:
            if len(out) >= MAX_EVIDENCE_CALLS:
                return out
            out.append({"tool": c.call.name, "call_id": _call_id(c.call), "argument": arg,
                        "entity_type": etype, "entity": hash_entity(ident),
                        "money_moving": c.money_moving, "side_effect_from": c.side_effect_source})
    return out


# -- per-run incidents ---------------------------------------------------------------------------------
class WrongEntityParams(RunScopeParams):
    type: str = "wrong_entity_action"
    group_by: tuple[str, ...] = ("app", "route")
    severity: str = Field(default="SEV-2", pattern=r"^SEV-[123]$")
    money_moving_severity: str = Field(default="SEV-1", pattern=r"^SEV-[123]$")
    auto_resolve_s: float = Field(default=3600.0, ge=0)
    # Severity one level up at each of these counts of offending runs in one open incident.
    escalate_runs: tuple[int, ...] = (5, 25)
    # Run ids kept as evidence per incident (the count goes on).
    evidence_runs: int = Field(default=10, ge=1, le=100)
    # A run idle this long (event time) is forgotten, with its subject.
    idle_ttl_s: float = Field(default=1800.0, gt=0)
    max_segments: int = Field(default=100000, ge=1)


@register
class WrongEntityAction(RunScopeMixin, Detector):
    """One incident per run that acts on an entity outside its subject."""

    type_name: ClassVar[str] = "wrong_entity_action"
    # What counts as in scope: strict also checks entity types the subject does not list; without
    # widening, ids the run's own reads returned are out of scope.
    tuning_space: ClassVar[dict[str, Any]] = {"strict": [False, True], "widen_from_results": [True, False]}
    kind: ClassVar[str] = "wrong_entity_action"
    Params: ClassVar[type[DetectorParams]] = WrongEntityParams
    params: WrongEntityParams

    def __init__(self, params: WrongEntityParams, env: Any):
        super().__init__(params, env)
        self.tools = env.tools if isinstance(env.tools, ToolMap) else ToolMap()

    def observe(self, event: RunEvent, ctx: Context) -> None:
        if not event.tool_calls and not event.subject:
            return
        run = ctx.state(self, run_segment(event), lambda: RunState(segment={}), event.ts)
        if run is None:
            return
        checks = self._check_event(run, event)  # type: ignore[arg-type]
        ctx.changed(self, run)
        # A wrong_entity_rate configured after this detector, with the same scope settings,
        # reuses these checks instead of keeping a second copy of every run's scope.
        ctx.shared[self._scope_key()] = checks
        bad = [c for c in checks if c.offending]
        if not bad:
            return
        n_bad = sum(len(c.offending) for c in bad)
        run.offenses += n_bad
        if run.flagged_at is not None:
            return  # a run is counted once; later offences only add to its count
        run.flagged_at = event.ts
        p = self.params
        segment = self.segment_of(event)
        inc = ctx.state(self, segment, lambda: WrongEntityIncident(segment={}), event.ts)
        if inc is None:
            return
        first = inc.runs == 0
        before = inc.severity
        money = any(c.money_moving for c in bad)
        inc.runs += 1
        inc.offenses += n_bad
        inc.money_moving = inc.money_moving or money
        inc.last_at = event.ts
        if len(inc.run_ids) < p.evidence_runs:
            inc.run_ids.append(event.run_id)
            inc.event_ids.append(event.event_id)
        inc.calls = (inc.calls + _evidence_calls(bad))[:MAX_EVIDENCE_CALLS]
        base = p.money_moving_severity if inc.money_moving else p.severity
        inc.severity = escalate(base, inc.runs, tuple(float(x) for x in p.escalate_runs))
        if first:
            inc.opened_at = event.ts
        if p.auto_resolve_s > 0:
            inc.resolve_at = event.ts + p.auto_resolve_s
            inc.active = True
        ctx.changed(self, inc)
        if not first and inc.severity == before:
            return  # joined the open incident: no new page
        top = next((c for c in bad if c.money_moving), bad[0])
        arg, etype, _ = top.offending[0]
        kind_txt = " (moves money)" if top.money_moving else ""
        if first:
            summary = (f"{top.call.name}{kind_txt} called with {arg} outside the subject of run "
                       f"{event.run_id} ({etype} not in its scope) on {segment_label(segment)}")
        else:
            summary = (f"{inc.runs} runs acted on entities outside their subject on "
                       f"{segment_label(segment)} since {window_label(max(event.ts - inc.opened_at, 1.0))} "
                       f"ago; latest: {top.call.name}{kind_txt} with {arg}")
        out = self.incident(
            action="trigger", segment=segment, summary=summary,
            window_start=inc.opened_at, window_end=event.ts, detected_at=event.ts, ctx=ctx,
            severity=inc.severity, observed=float(inc.runs), threshold=0.0, score=float(inc.offenses),
            evidence=self._evidence(inc, run.subject, run.seen, bad))
        ctx.emit(out)  # an update keeps the open incident's id (semwatch/engine/problems.py)

    @staticmethod
    def _evidence(inc: WrongEntityIncident, subject: dict, seen: dict, bad: list) -> dict[str, Any]:
        return {"run_ids": list(inc.run_ids), "event_ids": list(inc.event_ids), "calls": list(inc.calls),
                "offending_runs": inc.runs, "out_of_scope_arguments": inc.offenses,
                "scope_sizes": {t: len(subject.get(t, ())) + len(seen.get(t, ()))
                                for t in sorted({o[1] for c in bad for o in c.offending})}}

    def advance(self, state: SegmentState, watermark: float, ctx: Context) -> None:
        if not isinstance(state, WrongEntityIncident) or state.resolve_at is None:
            state.active = False
            ctx.changed(self, state)
            return
        if watermark < state.resolve_at:
            return
        at = state.resolve_at
        ctx.emit(self.incident(
            action="resolve", segment=state.segment,
            summary=(f"auto-resolved {window_label(self.params.auto_resolve_s)} after the last of "
                     f"{state.runs} wrong-entity run(s) on {segment_label(state.segment)}; review them "
                     "if nobody has"),
            window_start=state.opened_at, window_end=at, detected_at=at, ctx=ctx,
            severity=state.severity, observed=float(state.runs), threshold=0.0,
            evidence={"run_ids": list(state.run_ids), "offending_runs": state.runs}))
        ctx.drop(self, state.segment)  # the next offending run opens a new incident

    # -- contract test ---------------------------------------------------------------------------
    def probe(self, segment: dict[str, str], window: dict) -> Any:
        raise ProbeUnavailable("a point detector: no per-evaluation signal")

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"auto_resolve_s": 600, "runbook_url": "https://runbooks.example.com/wrong-entity"}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        return scope_runs(40, wrong_every=0), scope_runs(4, wrong_every=1, offset=40)



def scope_runs(n: int, wrong_every: int, offset: int = 0) -> list[dict]:
    """Order-agent runs: subject on the first event only, a search whose results widen the scope,
    then a refund (every ``wrong_every``-th run refunds a stranger's order)."""
    t0 = 1_767_600_000.0
    out: list[dict] = []
    for k in range(offset, offset + n):
        ts = t0 + 60 * k
        base = {"schema_version": "1", "run_id": f"run-{k}", "app": "order-agent", "route": "refunds",
                "model": "gpt-4o-mini", "input_tokens": 800, "output_tokens": 60, "latency_s": 1.2}
        user, own = f"u_{k}", f"#W{k}01"
        out.append({**base, "event_id": f"we-{k}-0", "ts": ts,
                    "request_text": f"please refund my order, mail me at cust{k}@example.com",
                    "subject": {"user_id": [user], "order_id": []},
                    "tool_calls": [{"name": "search_orders", "call_id": f"call_{k}_0",
                                    "arguments": {"user_id": user},
                                    "result": {"orders": [{"order_id": own, "total": 20.0}]}}]})
        wrong = wrong_every and (k - offset) % wrong_every == 0
        target = f"#W{k}99" if wrong else own
        out.append({**base, "event_id": f"we-{k}-1", "ts": ts + 5,
                    "tool_calls": [{"name": "refund_order", "call_id": f"call_{k}_1",
                                    "arguments": {"order_id": target, "user_id": user, "amount": 20.0},
                                    "result": {"status": "refunded"}},
                                   {"name": "send_email", "call_id": f"call_{k}_2",
                                    "arguments": {"user_id": user, "to": f"cust{k}@example.com"}}]})
    return out
