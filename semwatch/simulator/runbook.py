"""The runbook symptoms: malformed tool calls after a model switch, complaint bursts, grounding drops.

Scripted incidents, about one of each per simulated day (none in the first 3 hours), each one label:

``malformed_tool_call``  an order-agent route is switched to a similarly priced model that breaks
                         15-35 % of its tool calls (truncated JSON text, empty ids, placeholder ids in
                         reads) for 30-60 min, then switched back. segment = {app, route, model (new)}.
``complaint_cluster``    users of one support-bot or order-agent route complain about one thing
                         ("refund amount wrong", "charged twice" ...) on 6-12 % of answers for
                         30-60 min, with texts (some with an e-mail or phone number).
                         segment = {app, route}.
``grounding_drop``       a research-agent route gets a retrieval change (shipped as a new prompt
                         version) whose answers score 0.2-0.35 lower on groundedness for 30-90 min,
                         until it is rolled back; in the research agent's daytime (09-20 UTC), when
                         it answers often enough to show it. segment = {app, route}.

Background, whatever ``incidents`` says: 0.3 % of order-agent tool calls broken the same ways (never
the searches whose results widen a run's scope; the tool answers with an error), a
comment on 60 % of thumbs-down (everyday grumbles), and a groundedness score on 85 % of the
research agent's answers (each route its own normal range).

Determinism and the existing incidents: these incidents are scheduled from a random stream of
their own, after the benign churn, on routes and at times clear of every other incident and change
(the schedule's checks), and a change here never alters how many draws the traffic makes (a model
switch keeps the draw count, the retrieval version copies its predecessor's traits). The symptoms
are written onto the traffic's events afterwards (:class:`Annotator`, its own random stream), so
every other event field, id and label of a seed stays what it was.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from semwatch.simulator import corpus, labels
from semwatch.simulator.clock import DAY, HOUR, MINUTE, parse_time
from semwatch.simulator.randomness import RandomStream
from semwatch.simulator.routes import EXTRA_CHANGES, Route, Routes, Schedule
from semwatch.simulator.world import BENIGN_SWAPS, provider_for

if TYPE_CHECKING:
    from semwatch.simulator.incidents import PlannedRun
    from semwatch.simulator.routes import _TimelineBuilder
    from semwatch.simulator.simulation import Simulation

MALFORMED, MALFORMED_END = "malformed_switch", "malformed_switch_end"
COMPLAINTS, COMPLAINTS_END = "complaint_burst", "complaint_burst_end"
GROUNDING, GROUNDING_END = "grounding_drop", "grounding_drop_end"
_WARMUP_S, _QUIET_END_S = 3 * HOUR, 10 * MINUTE
_CLEAR_S = 45 * MINUTE  # other incidents stay this far away on the same route
_GAP_S = 5 * HOUR  # and configuration changes this far (a canary or a rollback may still be pending)
_TEXTS = corpus.load("runbook")
GRUMBLES: list[str] = _TEXTS["grumbles"]
THEMES: dict[str, list[str]] = _TEXTS["themes"]
BACKGROUND_MALFORMED = 0.003
_READS = ("get_order", "search_orders", "get_user")
_SCOPE_READS = ("search_orders", "get_user")
_GROUNDING = {"web-research": (0.86, 0.06), "deep-research": (0.90, 0.05)}  # usual mean, sd


def schedule_runbook_incidents(seed: np.random.SeedSequence, routes: Routes, schedule: Schedule, start: float,
                               duration: float, planned: list[PlannedRun]) -> None:
    """Schedule one incident of each runbook kind per simulated day."""
    lo, hi = start + _WARMUP_S, start + duration - _QUIET_END_S
    if hi - lo < 40 * MINUTE:
        return
    rng = RandomStream(seed, 1024)
    days = max(1, int(round(duration / DAY)))
    span = (hi - lo) / days
    busy = [(r.route.key, r.t0 - HOUR, r.t0 + r.duration_s + HOUR) for r in planned]
    for i in range(days):
        for kind, apps, minutes in ((MALFORMED, ("order-agent",), (30, 60)),
                                    (COMPLAINTS, ("support-bot", "support-bot", "order-agent"), (30, 60)),
                                    (GROUNDING, ("research-agent",), (30, 90))):
            _place(rng, routes, schedule, busy, kind, apps, lo + i * span, span, minutes)


def _place(rng: RandomStream, routes: Routes, schedule: Schedule, busy: list, kind: str, apps: tuple,
           lo: float, span: float, minutes: tuple[int, int]) -> None:
    duration = min(rng.uniform_between(*minutes) * MINUTE, 0.9 * span)
    data = {"end": 0.0, "pick": rng.uniform(), "share": rng.uniform_between(0.15, 0.35),
            "theme": rng.pick(sorted(THEMES)), "drop": rng.uniform_between(0.2, 0.35)}
    if kind == COMPLAINTS:
        data["share"] = rng.uniform_between(0.06, 0.12)
    fallback = None
    for _attempt in range(40):
        t0 = lo + rng.uniform() * (span - duration)
        route = routes.pick(rng, rng.pick(apps))
        a, b = t0 - _CLEAR_S, t0 + duration + _CLEAR_S
        if any(key == route.key and s < b and a < e for key, s, e in busy):
            continue
        if kind == GROUNDING and not 9 <= (t0 % DAY) / HOUR <= 20:
            continue  # research runs are rare at night: a drop would have few answers to show in
        fallback = fallback or (route, t0)
        if schedule.is_free(route, a, b, _GAP_S if kind != COMPLAINTS else 0.0):
            break
    else:
        if fallback is None:
            return
        route, t0 = fallback
    data["end"] = t0 + duration
    schedule.add(route, t0, kind, data)
    schedule.keep_clear(route, t0 - _CLEAR_S, t0 + duration + _CLEAR_S)
    busy.append((route.key, t0 - _CLEAR_S, t0 + duration + _CLEAR_S))


# -- the timeline: what each change does to a route's state, and its label ---------------------------
def _malformed(b: _TimelineBuilder, t: float, data: dict) -> bool:
    st = b.state
    options = BENIGN_SWAPS.get(st.model)
    if not options:
        return False
    old_model, old_provider = st.model, st.provider
    st.model = options[int(data["pick"] * len(options))]
    st.provider = provider_for(st.model, st.provider)
    st.symptoms["malformed"] = data["share"]
    b._follow_up(data["end"], MALFORMED_END, {"model": old_model, "provider": old_provider})
    b.labels.append(labels.malformed_tool_call(b.route, t, data["end"], old_model, st.model, data["share"]))
    return True


def _malformed_end(b: _TimelineBuilder, t: float, data: dict) -> bool:
    b.state.model, b.state.provider = data["model"], data["provider"]
    b.state.symptoms.pop("malformed", None)
    return True


def _complaints(b: _TimelineBuilder, t: float, data: dict) -> bool:
    b.state.symptoms["complaints"] = (data["share"], data["theme"])
    b._follow_up(data["end"], COMPLAINTS_END, {})
    b.labels.append(labels.complaint_cluster(b.route, t, data["end"], data["theme"], data["share"]))
    return True


def _complaints_end(b: _TimelineBuilder, t: float, data: dict) -> bool:
    b.state.symptoms.pop("complaints", None)
    return True


def _grounding(b: _TimelineBuilder, t: float, data: dict) -> bool:
    st = b.state
    previous = st.prompt_version
    # The same traits as the version it replaces: a retrieval change, not a prompt change.
    bad = b._new_version(b.route.versions[previous])
    st.prompt_version = bad
    st.symptoms["grounding_drop"] = data["drop"]
    b._follow_up(data["end"], GROUNDING_END, {"to": previous, "from": bad})
    b.labels.append(labels.grounding_drop(b.route, t, data["end"], bad, previous, data["drop"]))
    return True


def _grounding_end(b: _TimelineBuilder, t: float, data: dict) -> bool:
    if b.state.prompt_version == data["from"]:
        b.state.prompt_version = data["to"]
    b.state.symptoms.pop("grounding_drop", None)
    return True


EXTRA_CHANGES.update({MALFORMED: _malformed, MALFORMED_END: _malformed_end, COMPLAINTS: _complaints,
                      COMPLAINTS_END: _complaints_end, GROUNDING: _grounding, GROUNDING_END: _grounding_end})


# -- the symptoms on the events ----------------------------------------------------------------------------
class Annotator:
    """Writes the runbook symptoms (and their background) onto the traffic's events, in stream order."""

    def __init__(self, sim: Simulation, seed: np.random.SeedSequence, skip_event_ids: set[str],
                 routes: Iterable[Route] | None = None):
        self.rng = RandomStream(seed)
        self.routes: dict[tuple[str, str], Route] = {r.key: r for r in (sim.routes.all if routes is None else routes)}
        self.skip = skip_event_ids  # the scripted runs of the other incidents keep their events as planned

    def __call__(self, events: Iterable[dict]) -> Iterator[dict]:
        for ev in events:
            if ev["event_id"] not in self.skip:
                self.annotate(ev)
            yield ev

    def annotate(self, ev: dict) -> None:
        route = self.routes.get((ev["app"], ev.get("route")))
        if route is None:
            return
        state = route.at(parse_time(ev["ts"]))
        rng = self.rng
        if ev["app"] == "order-agent" and "tool_calls" in ev:
            share = state.symptoms.get("malformed", BACKGROUND_MALFORMED)
            for call in ev["tool_calls"]:
                # Never the reads whose results widen what a run may act on (the run goes on as
                # planned, as if the tool had answered): the wrong-entity detectors would rightly
                # flag the later action.
                if rng.uniform() < share and call["name"] not in _SCOPE_READS:
                    self._break(call)
        answered = "response_text" in ev and "error_type" not in ev
        feedback = ev.get("feedback")
        if feedback and feedback.get("thumbs_down") and rng.uniform() < 0.6:
            feedback["comment"] = rng.pick(GRUMBLES)
        burst = state.symptoms.get("complaints")
        if burst is not None and answered and rng.uniform() < burst[0]:
            text = rng.pick(THEMES[burst[1]]).format(amount=f"{rng.integer_between(20, 90)}.00",
                                                     other=f"{rng.integer_between(5, 19)}.00",
                                                     phone="+1 415 555 0132", email="jane.doe@example.com",
                                                     order=f"#W{rng.integer_between(1000000, 9999999)}",
                                                     last4=f"{rng.integer_between(1000, 9999)}")
            ev["feedback"] = {"thumbs_down": True, "comment": text}
        if ev["app"] == "research-agent" and answered and rng.uniform() < 0.85:
            mean, sd = _GROUNDING.get(ev["route"], (0.85, 0.06))
            drop = state.symptoms.get("grounding_drop", 0.0)
            if drop:
                mean, sd = mean - drop, sd * 1.6
            score = min(1.0, max(0.0, mean + sd * rng.standard_normal()))
            ev.setdefault("metrics", {})["groundedness"] = round(score, 3)

    def _break(self, call: dict) -> None:
        """Truncated JSON text, an empty id, or (in a read) a placeholder id; the tool refuses it."""
        rng = self.rng
        call["result"] = {"error": "invalid arguments"}
        args = call["arguments"]
        ids = [k for k in args if k.endswith("_id")]
        x = rng.uniform()
        if x < 0.3 and ids:
            args[ids[0]] = ""
        elif x < 0.6 and ids and call["name"] in _READS:
            args[ids[0]] = rng.pick((f"<{ids[0]}>", "string", f"{{{ids[0]}}}"))
        else:
            text = json.dumps(args)
            call["arguments"] = text[: max(2, int(len(text) * rng.uniform_between(0.3, 0.9)))]
