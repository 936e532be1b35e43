"""What every simulated model call has in common: its event's fields, errors, tokens, cost, latency.

Events follow the run-event contract (docs/contracts.md). Their keys are filled in a fixed order (the base
fields, then tokens/cost/latency, then request, response and the rest), which is the order they
have in the JSON output.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from semwatch.simulator.clock import format_ms, to_ms
from semwatch.simulator.randomness import IdMaker, RandomStream
from semwatch.simulator.routes import Route, RouteState, VersionTraits
from semwatch.simulator.world import MODELS, PRICES

if TYPE_CHECKING:
    from semwatch.simulator.simulation import Simulation

_TIMEOUT_SHARE = 0.0025  # of all calls
_RATE_LIMIT_SHARE = 0.0015  # at normal load; more when busier than a weekday's mean
_TIMEOUT_AFTER_S = [30.0, 60.0, 120.0]  # client timeouts


class EventMaker:
    """Builds the events of simulated model calls, drawing from one random stream and id sequence."""

    def __init__(self, sim: Simulation, rng: RandomStream, ids: IdMaker, event_ids: IdMaker):
        self.sim = sim
        self.rng = rng
        self.ids = ids  # runs, conversations, tool calls, messages, refunds
        self.event_ids = event_ids

    def load(self, app: str, t: float) -> float:
        return self.sim.load.at(app, t)

    def new_event(self, run_id: str, route: Route, state: RouteState, version: int, tenant: str,
                  conversation: str | None) -> dict:
        ev = {"schema_version": "1", "event_id": self.event_ids.next("evt_"), "run_id": run_id, "ts": "",
              "app": route.app, "route": route.name, "model": state.model, "provider": state.provider,
              "prompt_version": f"v{version}", "tenant": tenant}
        if conversation:
            ev["conversation_id"] = conversation
        return ev

    def begin_turn(self, route: Route, t: float, tenant: str,
                   conversation: str | None) -> tuple[RouteState, int, VersionTraits, float, dict]:
        """A chat turn at ``t`` (a run of its own): the route's configuration, the prompt version the
        turn gets, that version's traits, the load, and the new event."""
        state = route.at(t)
        version = state.pick_version(self.rng)
        traits = route.versions[version]
        load = self.load(route.app, t)
        return state, version, traits, load, self.new_event(self.ids.next("run_"), route, state, version, tenant,
                                                            conversation)

    def draw_error(self, provider: str, t: float, load: float) -> str | None:
        """``timeout``, ``rate_limit`` (more when busy or in a provider's burst) or None."""
        p_rate_limit = _RATE_LIMIT_SHARE + 0.003 * max(0.0, load - 1.0)
        for burst_provider, start, end, extra in self.sim.rate_limit_bursts:
            if burst_provider == provider and start <= t <= end:
                p_rate_limit += extra
        x = self.rng.uniform()
        if x < _TIMEOUT_SHARE:
            return "timeout"
        if x < _TIMEOUT_SHARE + p_rate_limit:
            return "rate_limit"
        return None

    def complete(self, ev: dict, model: str, in_tok: int, out_tok: int, t0: float, load: float,
                 error: str | None, finish: str | None, max_tokens: int) -> float:
        """Fill tokens, cost, latency, finish reason and error; returns when the call completed."""
        rng = self.rng
        traits = MODELS[model]
        if error == "timeout":
            latency = rng.pick(_TIMEOUT_AFTER_S) + abs(rng.standard_normal()) * 0.05
            in_tok, out_tok, finish = 0, 0, None
        elif error == "rate_limit":
            latency = rng.lognormal(0.12, 0.5)
            in_tok, out_tok, finish = 0, 0, None
        else:
            if out_tok >= max_tokens:
                out_tok, finish = max_tokens, "length"
            # time to first token (slower when busy) + reading the input + writing the output
            latency = (traits.first_token_s * math.exp(0.35 * rng.standard_normal())
                       * (1.0 + 0.2 * max(0.0, load - 1.0))
                       + in_tok / 45_000.0 + out_tok / (traits.tokens_per_s * math.exp(0.15 * rng.standard_normal())))
        ev["input_tokens"] = in_tok
        ev["output_tokens"] = out_tok
        if rng.uniform() < self.sim.cost_field_fraction:
            pin, pout = PRICES[model]
            ev["cost_usd"] = round((in_tok * pin + out_tok * pout) / 1e6, 8)
        ev["latency_s"] = round(latency, 3)
        if finish is not None:
            ev["finish_reason"] = finish
        if error is not None:
            ev["error_type"] = error
        return t0 + latency

    def add_exchange(self, ev: dict, request: str, answer: str, refused: bool, flagged: bool,
                     error: str | None) -> None:
        """A chat turn's request and, unless the call failed, its answer."""
        ev["request_text"] = request
        if error is None:
            ev["response_text"] = answer
            self.maybe_mark_refusal(ev, refused)
        else:
            self.rng.uniform()  # keeps the stream where an answered turn would leave it
        if flagged:
            ev["request_flagged"] = True

    def maybe_mark_refusal(self, ev: dict, refused: bool) -> None:
        """Some producers say whether the answer was a refusal; most leave it to semwatch."""
        if self.rng.uniform() < self.sim.refusal_field_fraction:
            ev["refusal"] = refused

    def maybe_feedback(self, ev: dict, thumbs_down_below: float, thumbs_up_above: float = 1.0) -> None:
        """One draw: a thumbs-down below the first threshold, a thumbs-up above the second."""
        x = self.rng.uniform()
        if x < thumbs_down_below:
            ev["feedback"] = {"thumbs_down": True}
        elif x > thumbs_up_above:
            ev["feedback"] = {"thumbs_up": True}

    def quality_score(self, mean: float, sd: float) -> float:
        return round(min(1.0, max(0.0, mean + sd * self.rng.standard_normal())), 3)


def stamp(ev: dict, t_end: float, out: list[tuple[int, dict]]) -> None:
    """Time-stamp the event with its completion and add it to ``out`` as ``(ms, event)``."""
    ms = to_ms(t_end)
    ev["ts"] = format_ms(ms)
    out.append((ms, ev))


def stamp_step(ev: dict, t_end: float, run_events: list[tuple[int, dict]]) -> None:
    """Like :func:`stamp`, for the steps of one agent run: each at least 1 ms after the one before."""
    ms = to_ms(t_end)
    if run_events and ms <= run_events[-1][0]:
        ms = run_events[-1][0] + 1
    ev["ts"] = format_ms(ms)
    run_events.append((ms, ev))
