"""Routes, and how their configuration (model, provider, prompt version) changes over simulated time.

Changes are scheduled first (:class:`Schedule`: incidents, then benign churn that keeps clear of
them), then each route's changes are applied in time order (:func:`build_timeline`), which also
schedules follow-ups (a canary's promotion, a rollback, the end of an incident) and writes the
labels of the incidents that are configuration changes.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from typing import Callable, NamedTuple

from semwatch.simulator import labels
from semwatch.simulator.randomness import RandomStream, cumulative
from semwatch.simulator.world import (
    APP_NAMES,
    BENIGN_SWAPS,
    EXPENSIVE_MODELS,
    QUIET_ROUTES,
    ROUTE_SPECS,
    RouteSpec,
    blended_price,
    provider_for,
)


class VersionTraits(NamedTuple):
    """What a prompt version changes: prompt length, answer verbosity, how readily it refuses."""

    system_tokens: int
    verbosity: float
    refusal_factor: float


class RouteState:
    """A route's configuration from one change to the next."""

    __slots__ = ("model", "provider", "prompt_version", "canary_version", "canary_share", "spike_version",
                 "spike_refusal_rate", "symptoms")

    def __init__(self, model: str, provider: str, prompt_version: int):
        self.model = model
        self.provider = provider
        self.prompt_version = prompt_version
        self.canary_version = 0  # 0: no canary
        self.canary_share = 0.0
        self.spike_version = 0  # the bad version of a false-refusal spike, 0: none
        self.spike_refusal_rate = 0.0  # how often that version refuses ordinary requests
        # The runbook symptoms of an incident in progress (semwatch/simulator/runbook.py), by name:
        # malformed tool-call share, complaint share and theme, grounding drop. Empty: none.
        self.symptoms: dict = {}

    def copy(self) -> RouteState:
        s = RouteState(self.model, self.provider, self.prompt_version)
        s.canary_version, s.canary_share = self.canary_version, self.canary_share
        s.spike_version, s.spike_refusal_rate = self.spike_version, self.spike_refusal_rate
        s.symptoms = dict(self.symptoms)
        return s

    def pick_version(self, rng: RandomStream) -> int:
        """The prompt version a request gets: the canary's for a share of requests."""
        if self.canary_version and rng.uniform() < self.canary_share:
            return self.canary_version
        return self.prompt_version


class Route:
    def __init__(self, spec: RouteSpec):
        self.app = spec.app
        self.name = spec.name
        self.weight = spec.weight
        self.refusal_rate = spec.refusal_rate
        self.output_median = spec.output_median
        self.key = (self.app, self.name)
        self.base = RouteState(spec.model, spec.provider, spec.prompt_version)
        self.versions: dict[int, VersionTraits] = {spec.prompt_version: VersionTraits(spec.system_tokens, 1.0, 1.0)}
        # the timeline: states[i] holds from times[i] on
        self.times: list[float] = [-1e18]
        self.states: list[RouteState] = [self.base]
        self.actions: list[tuple] = []  # scheduled changes (t, seq, kind, data), applied by build_timeline

    def at(self, t: float) -> RouteState:
        return self.states[bisect_right(self.times, t) - 1]


class Routes:
    """The busy routes (``all``) and the traffic split between each app's, and the quiet routes."""

    def __init__(self) -> None:
        self.all = [Route(s) for s in ROUTE_SPECS]
        self.by_app = {a: [r for r in self.all if r.app == a] for a in APP_NAMES}
        self.cum_by_app = {a: cumulative([r.weight for r in rs]) for a, rs in self.by_app.items()}
        # Kept out of `all` and the split: the busy routes' picks and churn draw as they always did.
        self.quiet = [Route(q.spec) for q in QUIET_ROUTES]

    def pick(self, rng: RandomStream, app: str) -> Route:
        return rng.weighted_pick(self.by_app[app], self.cum_by_app[app])


# Change kinds (the data each carries):
ROLLOUT = "rollout"  # canary (share, 0: none), canary_s, rollback_after_s (None: kept), 3 uniforms for the traits
PROMOTE = "promote"  # version: the canary becomes the prompt version
ROLLBACK = "rollback"  # to, from
MODEL_SWAP = "model_swap"  # pick: uniform choosing among BENIGN_SWAPS
REFUSAL_SPIKE = "refusal_spike"  # rate, end, extra_system_tokens
REFUSAL_SPIKE_END = "refusal_spike_end"  # to: the version rolled back to
COST_SPIKE = "cost_spike"  # end, pick: uniform choosing the expensive model
COST_SPIKE_END = "cost_spike_end"  # model, provider
#: Further change kinds, registered by other modules (runbook.py): kind -> handler(builder, t, data),
#: which changes ``builder.state`` and says whether the change is recorded.
EXTRA_CHANGES: dict[str, Callable[["_TimelineBuilder", float, dict], bool]] = {}


def rollout(canary_share: float, canary_s: float, rollback_after_s: float | None,
            draws: tuple[float, float, float]) -> dict:
    """The data of a ROLLOUT change; ``draws`` are three uniforms that set the new version's traits."""
    return {"canary": canary_share, "canary_s": canary_s, "rollback_after_s": rollback_after_s, "draws": draws}


class Schedule:
    """Changes planned for the routes, and the windows benign churn has to keep clear of."""

    def __init__(self) -> None:
        self._seq = 0  # ties in time are applied in the order they were planned
        self._incident_windows: dict[tuple, list[tuple[float, float]]] = {}
        self._changes: dict[tuple, list[float]] = {}

    def add(self, route: Route, t: float, kind: str, data: dict) -> None:
        self._seq += 1
        route.actions.append((t, self._seq, kind, data))

    def keep_clear(self, route: Route, start: float, end: float) -> None:
        self._incident_windows.setdefault(route.key, []).append((start, end))

    def note_change(self, route: Route, t: float) -> None:
        self._changes.setdefault(route.key, []).append(t)

    def is_free(self, route: Route, t: float, t_last: float, gap: float) -> bool:
        """[t, t_last] clear of incident windows on the route and ``gap`` away from its other changes."""
        if any(t <= b and a <= t_last for a, b in self._incident_windows.get(route.key, ())):
            return False
        return all(x < t - gap or x > t_last + gap for x in self._changes.get(route.key, ()))


def build_timeline(route: Route, out_labels: list[dict]) -> None:
    """Apply the route's scheduled changes in time order, recording the state after each."""
    _TimelineBuilder(route, out_labels).run()


class _TimelineBuilder:
    """Walks one route's changes in time order; each change kind has a handler below."""

    def __init__(self, route: Route, out_labels: list[dict]):
        self.route = route
        self.labels = out_labels
        self.pending = list(route.actions)
        heapq.heapify(self.pending)
        self.state = route.base.copy()
        self.newest_version = self.state.prompt_version
        self._follow_up_seq = 10_000_000  # after every planned change at the same time
        self._apply: dict[str, Callable[[float, dict], bool]] = {
            ROLLOUT: self._rollout, PROMOTE: self._promote, ROLLBACK: self._rollback,
            MODEL_SWAP: self._model_swap, REFUSAL_SPIKE: self._refusal_spike,
            REFUSAL_SPIKE_END: self._refusal_spike_end, COST_SPIKE: self._cost_spike,
            COST_SPIKE_END: self._cost_spike_end,
        }
        for kind, handler in EXTRA_CHANGES.items():
            self._apply[kind] = lambda t, data, handler=handler: handler(self, t, data)

    def run(self) -> None:
        while self.pending:
            t, _seq, kind, data = heapq.heappop(self.pending)
            if self._apply[kind](t, data):
                self.route.times.append(t)
                self.route.states.append(self.state.copy())

    def _follow_up(self, t: float, kind: str, data: dict) -> None:
        self._follow_up_seq += 1
        heapq.heappush(self.pending, (t, self._follow_up_seq, kind, data))

    def _new_version(self, traits: VersionTraits) -> int:
        self.newest_version += 1
        self.route.versions[self.newest_version] = traits
        return self.newest_version

    # Each handler changes self.state and says whether the change is recorded.
    def _rollout(self, t: float, data: dict) -> bool:
        st = self.state
        system_tokens, verbosity, refusal_factor = self.route.versions[st.prompt_version]
        u, v, w = data["draws"]
        version = self._new_version(VersionTraits(
            max(200, system_tokens + int(-80 + 300 * u)),
            verbosity * math.exp(0.10 * (2 * v - 1)),
            min(1.4, max(0.7, refusal_factor * math.exp(0.25 * (2 * w - 1))))))
        previous = st.prompt_version
        if data["canary"] > 0:
            st.canary_version, st.canary_share = version, data["canary"]
            self._follow_up(t + data["canary_s"], PROMOTE, {"version": version})
        else:
            st.prompt_version = version
        if data["rollback_after_s"]:
            self._follow_up(t + data["canary_s"] + data["rollback_after_s"], ROLLBACK,
                            {"to": previous, "from": version})
        return True

    def _promote(self, t: float, data: dict) -> bool:
        st = self.state
        st.prompt_version, st.canary_version, st.canary_share = data["version"], 0, 0.0
        return True

    def _rollback(self, t: float, data: dict) -> bool:
        if self.state.prompt_version == data["from"]:
            self.state.prompt_version = data["to"]
        return True

    def _model_swap(self, t: float, data: dict) -> bool:
        st = self.state
        options = BENIGN_SWAPS.get(st.model)
        if not options:
            return False
        st.model = options[int(data["pick"] * len(options))]
        st.provider = provider_for(st.model, st.provider)
        return True

    def _refusal_spike(self, t: float, data: dict) -> bool:
        st = self.state
        system_tokens, verbosity, refusal_factor = self.route.versions[st.prompt_version]
        bad = self._new_version(VersionTraits(system_tokens + data["extra_system_tokens"], verbosity * 0.92,
                                              refusal_factor))
        previous = st.prompt_version
        st.prompt_version, st.spike_version, st.spike_refusal_rate = bad, bad, data["rate"]
        st.canary_version, st.canary_share = 0, 0.0
        self._follow_up(data["end"], REFUSAL_SPIKE_END, {"to": previous})
        self.labels.append(labels.false_refusal_spike(self.route, st.model, t, data["end"], bad, previous,
                                                      data["rate"]))
        return True

    def _refusal_spike_end(self, t: float, data: dict) -> bool:
        st = self.state
        st.prompt_version, st.spike_version, st.spike_refusal_rate = data["to"], 0, 0.0
        return True

    def _cost_spike(self, t: float, data: dict) -> bool:
        st = self.state
        old_model, old_provider = st.model, st.provider
        new_model = _expensive_replacement(old_model, data["pick"])
        st.model, st.provider = new_model, provider_for(new_model, None)
        self._follow_up(data["end"], COST_SPIKE_END, {"model": old_model, "provider": old_provider})
        ratio = blended_price(new_model) / blended_price(old_model)
        self.labels.append(labels.cost_spike(self.route, t, data["end"], old_model, new_model, ratio))
        return True

    def _cost_spike_end(self, t: float, data: dict) -> bool:
        self.state.model, self.state.provider = data["model"], data["provider"]
        return True


def _expensive_replacement(model: str, pick: float) -> str:
    """A model 10-30x as expensive (else the one nearest 15x), chosen by the uniform ``pick``."""
    base = blended_price(model)
    candidates = [m for m in EXPENSIVE_MODELS if 10.0 <= blended_price(m) / base <= 30.0]
    if not candidates:
        candidates = [min(EXPENSIVE_MODELS, key=lambda m: abs(blended_price(m) / base - 15.0))]
    return candidates[int(pick * len(candidates))]
