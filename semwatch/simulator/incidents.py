"""Scripted incidents: when they happen, and the agent runs that carry two of the four kinds.

About one incident of each kind per simulated day, none in the first 3 hours:

* a false-refusal spike and a cost spike are configuration changes, scheduled here and applied
  (and labelled) by routes.build_timeline;
* a wrong-entity action and a token spike (runaway loop) are single runs, played here.

Benign churn (churn.py) is scheduled after the incidents and keeps clear of their routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from semwatch.simulator import corpus, labels
from semwatch.simulator.apps.order_agent import REQUESTS, TOOL_SCHEMA_TOKENS, order_agent_run
from semwatch.simulator.apps.research_agent import AgentRun, agent_steps, next_polling_step, research_question
from semwatch.simulator.calls import EventMaker, stamp_step
from semwatch.simulator.clock import DAY, HOUR, MINUTE
from semwatch.simulator.population import Customer
from semwatch.simulator.randomness import IdMaker, RandomStream, cumulative
from semwatch.simulator.routes import COST_SPIKE, REFUSAL_SPIKE, ROLLOUT, Route, Routes, RouteState, Schedule, rollout
from semwatch.simulator.world import APPS, MODELS, blended_price

if TYPE_CHECKING:
    from semwatch.simulator.simulation import Simulation

WARMUP_S = 3 * HOUR  # no incidents before: detectors need a baseline
_QUIET_END_S = 10 * MINUTE  # nor in the last minutes
_KEEP_CLEAR_S = 45 * MINUTE  # benign churn stays this far from an incident on the same route
WRONG_ENTITY = "wrong_entity_action"
TOKEN_SPIKE = "token_spike"
_ID_OFFSET = 1 << 40  # incident runs' ids are counted apart from the traffic's
_STILL_CHECKING: str = corpus.load("orders")["answers"]["still_checking"]


@dataclass
class PlannedRun:
    kind: str  # WRONG_ENTITY or TOKEN_SPIKE
    t0: float
    route: Route
    duration_s: float = 0.0  # token spike: how long a polling loop lasts
    steps: int = 0  # token spike: how many steps the loop takes


def schedule_incidents(seed: np.random.SeedSequence, routes: Routes, schedule: Schedule, start: float,
                       duration: float) -> list[PlannedRun]:
    """Schedule the configuration incidents; returns the incident runs to play."""
    end = start + duration
    lo, hi = start + WARMUP_S, end - _QUIET_END_S
    if hi - lo < 40 * MINUTE:
        return []
    rng = RandomStream(seed, 1024)
    days = max(1, int(round(duration / DAY)))
    span = (hi - lo) / days  # one incident of each kind per span
    refusal_windows = _schedule_refusal_spikes(rng, routes, schedule, lo, span, days, end)
    runs = [PlannedRun(WRONG_ENTITY, lo + i * span + rng.uniform() * span * 0.95, routes.pick(rng, "order-agent"))
            for i in range(days)]
    for i in range(days):
        t0, polling_s = _window(rng, lo, span, i, 10, 40)
        app = "research-agent" if rng.chance(0.6) else "order-agent"
        route = routes.pick(rng, app)
        runs.append(PlannedRun(TOKEN_SPIKE, t0, route, polling_s, rng.integer_between(40, 150)))
    _schedule_cost_spikes(rng, routes, schedule, lo, span, days, refusal_windows)
    return runs


def _window(rng: RandomStream, lo: float, span: float, i: int, min_minutes: float,
            max_minutes: float) -> tuple[float, float]:
    """Start and length of an incident somewhere in the i-th span."""
    duration = min(rng.uniform_between(min_minutes, max_minutes) * MINUTE, 0.9 * span)
    return lo + i * span + rng.uniform() * (span - duration), duration


def _schedule_refusal_spikes(rng: RandomStream, routes: Routes, schedule: Schedule, lo: float, span: float,
                             days: int, end: float) -> list[tuple[float, float, tuple]]:
    windows = []
    for i in range(days):
        t0, duration = _window(rng, lo, span, i, 30, 90)
        route = routes.pick(rng, "support-bot")
        plan_refusal_spike(rng, schedule, route, t0, t0 + duration, rng.uniform_between(0.25, 0.60), end)
        windows.append((t0, t0 + duration, route.key))
    return windows


def plan_refusal_spike(rng: RandomStream, schedule: Schedule, route: Route, t0: float, t1: float, rate: float,
                       end: float) -> None:
    """A prompt version refusing ``rate`` of ordinary requests from ``t0`` until its rollback at ``t1``."""
    schedule.add(route, t0, REFUSAL_SPIKE, {"rate": rate, "end": t1,
                                            "extra_system_tokens": rng.integer_between(150, 420)})
    schedule.keep_clear(route, t0 - _KEEP_CLEAR_S, t1 + _KEEP_CLEAR_S)
    if rng.chance(0.5):  # a fixed version is rolled out later, sometimes
        t_fix = t1 + rng.uniform_between(1.0, 5.0) * HOUR
        if t_fix < end - _QUIET_END_S:
            draws = (rng.uniform(), rng.uniform(), rng.uniform())
            schedule.add(route, t_fix, ROLLOUT, rollout(0.0, 0.0, None, draws))
            schedule.note_change(route, t_fix)


def _schedule_cost_spikes(rng: RandomStream, routes: Routes, schedule: Schedule, lo: float, span: float, days: int,
                          refusal_windows: list[tuple[float, float, tuple]]) -> None:
    cheap = [r for r in routes.all if blended_price(r.base.model) < 1.5]
    for i in range(days):
        t0, duration = _window(rng, lo, span, i, 30, 120)
        # not on a route within 30 min of its refusal spike, when there is a choice
        candidates = [r for r in cheap if not any(key == r.key and a0 - 30 * MINUTE < t0 + duration
                                                  and t0 < a1 + 30 * MINUTE for a0, a1, key in refusal_windows)]
        candidates = candidates or cheap
        weights = [APPS[r.app].share * r.weight for r in candidates]
        route = rng.weighted_pick(candidates, cumulative(weights))
        schedule.add(route, t0, COST_SPIKE, {"end": t0 + duration, "pick": rng.uniform()})
        schedule.keep_clear(route, t0 - _KEEP_CLEAR_S, t0 + duration + _KEEP_CLEAR_S)


def play_incident_runs(sim: Simulation, runs: list[PlannedRun], seed: np.random.SeedSequence,
                       id_keys: tuple[int, int], out_labels: list[dict]) -> list[tuple[int, dict]]:
    """The planned runs' events as ``(ms, event)``; their labels go to ``out_labels``."""
    maker = EventMaker(sim, RandomStream(seed, 2048), IdMaker(id_keys[0], _ID_OFFSET),
                       IdMaker(id_keys[1], _ID_OFFSET))
    events: list[tuple[int, dict]] = []
    for run in runs:
        out: list[tuple[int, dict]] = []
        if run.kind == WRONG_ENTITY:
            wrong = order_agent_run(maker, run.route, run.t0, out, wrong_entity=True)
            if wrong is None:
                continue  # the run did not get to act: neither label nor events
            out_labels.append(labels.wrong_entity_action(run.route, *wrong))
        else:
            first, last, pace = _runaway_run(maker, run, out)
            out_labels.append(labels.token_spike(run.route, first, last, pace, run.steps))
        events.extend(out)
    return events


def _runaway_run(maker: EventMaker, run: PlannedRun, out: list) -> tuple[dict, dict, str]:
    """A runaway loop; returns its first and last events and its pace.

    Half the loops are tight (the agent re-calls the model as soon as a tool answers: minutes of
    steps), half poll (a retry or wait between steps: the same steps over the run's duration).
    """
    rng = maker.rng
    pace = "tight" if rng.uniform() < 0.5 else "polling"
    polling_s = 0.0 if pace == "tight" else run.duration_s
    route = run.route
    state = route.at(run.t0)
    version = state.prompt_version  # never a canary
    tenant = maker.sim.population.pick_tenant(rng, route.app)
    run_id = maker.ids.next("run_")
    if route.app == "research-agent":
        question, terms = research_question(rng)
        events = agent_steps(maker, AgentRun(route, state, version, tenant, run_id, run.t0, question, run.steps,
                                             terms=terms, runaway=True, polling_s=polling_s), out)
        return events[0], events[-1], pace
    first, last = _order_lookup_loop(maker, run, state, version, tenant, run_id, polling_s, out)
    return first, last, pace


def _order_lookup_loop(maker: EventMaker, run: PlannedRun, state: RouteState, version: int, tenant: str,
                       run_id: str, polling_s: float, out: list) -> tuple[dict, dict]:
    """An order-agent loop: it keeps re-reading the same order and never answers."""
    rng = maker.rng
    route = run.route
    customer = rng.pick(maker.sim.population.customers_by_tenant[tenant])
    order = rng.pick(customer.orders)
    request = rng.pick(REQUESTS["status"]).format(order=order["order_id"], item=order["items"][0]["name"])
    system_tokens = route.versions[version].system_tokens
    model = state.model
    context = system_tokens + TOOL_SCHEMA_TOKENS + len(request) / 3.8
    events: list[tuple[int, dict]] = []
    t = run.t0
    for k in range(run.steps):
        last = k == run.steps - 1
        ev = maker.new_event(run_id, route, state, version, tenant, None)
        load = maker.load(route.app, t)
        out_tok = max(15, int(rng.lognormal(55, 0.4)))
        t_end = maker.complete(ev, model, int(min(context, MODELS[model].context_window * 0.95)), out_tok, t, load,
                               None, "stop" if last else "tool_calls", 4096)
        if k == 0:
            ev["request_text"] = request
        ev["subject"] = {"user_id": [customer.user_id], "order_id": [order["order_id"]]}
        if last:
            ev["response_text"] = _STILL_CHECKING
        else:
            ev["tool_calls"] = [_lookup_call(maker, k, customer, order)]
        maker.maybe_mark_refusal(ev, False)
        context += out_tok + rng.lognormal(900, 0.4)
        stamp_step(ev, t_end, events)
        if polling_s > 0:
            t = next_polling_step(rng, t_end, run.t0, polling_s, k, run.steps)
        else:
            t = t_end + rng.lognormal(0.25, 0.5) + rng.lognormal(0.15, 0.5)  # get_order answers, the model goes on
    out.extend(events)
    return events[0][1], events[-1][1]


def _lookup_call(maker: EventMaker, k: int, customer: Customer, order: dict) -> dict:
    """Two reads of the order, then a search of the customer's orders, again and again."""
    if k % 3 != 2:
        name, args = "get_order", {"order_id": order["order_id"]}
        result = {"order_id": order["order_id"], "user_id": customer.user_id, "status": order["status"],
                  "total": order["total"]}
    else:
        name, args = "search_orders", {"user_id": customer.user_id}
        result = {"orders": [{"order_id": o["order_id"], "status": o["status"]} for o in customer.orders[:10]]}
    return {"name": name, "call_id": maker.ids.next("call_", 12), "arguments": args, "side_effect": False,
            "result": result}
