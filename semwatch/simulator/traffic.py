"""How much traffic, when: each app's load curve, arrivals minute by minute, the merged event stream.

Arrivals are Poisson with a rate that follows each app's load curve (a daily curve, weekends, day-
to-day variation), times a slowly wandering burstiness factor. A session's events lie in the future
of its arrival, so events wait in a heap until the clock has passed them; memory stays bounded by
what is in flight.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from semwatch.simulator.apps.code_assistant import code_session
from semwatch.simulator.apps.order_agent import order_agent_session
from semwatch.simulator.apps.research_agent import research_run
from semwatch.simulator.apps.support_bot import support_session
from semwatch.simulator.calls import EventMaker
from semwatch.simulator.clock import DAY, MINUTE, to_ms
from semwatch.simulator.randomness import MASK64, IdMaker, RandomStream, mix64
from semwatch.simulator.world import APP_NAMES, APPS

if TYPE_CHECKING:
    from semwatch.simulator.simulation import Simulation


class LoadCurve:
    """Expected traffic per app relative to a weekday's mean (1.0)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._minute_of_day = {app: daily_curve(app) for app in APPS}
        self._days: dict[tuple[str, int], float] = {}

    def at(self, app: str, t: float) -> float:
        """Expected traffic multiplier at epoch second ``t``."""
        day, second = divmod(t, DAY)
        return self._minute_of_day[app][int(second // 60) % 1440] * self._day_factor(app, int(day))

    def _day_factor(self, app: str, day: int) -> float:
        key = (app, day)
        factor = self._days.get(key)
        if factor is None:
            # hashed from (seed, app, day), not drawn: the same day looks the same whatever the start
            h = mix64((self.seed * 1_000_003 + APP_NAMES.index(app) * 7919 + day) & MASK64)
            z = ((h >> 11) / float(1 << 53)) * 2 - 1  # uniform(-1, 1)
            factor = math.exp(0.15 * z)
            weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
            if weekday >= 5:
                factor *= APPS[app].weekend
            self._days[key] = factor
        return factor


def daily_curve(app: str) -> list[float]:
    """One value per minute of the day, mean 1.0: low at night, a peak, a small lunch-time dip."""
    shape = APPS[app]
    hours = np.arange(0, 24, 1 / 60.0)
    x = (1 + np.cos(2 * np.pi * (hours - shape.peak) / 24.0)) / 2.0
    # the dip is 3.5 h before the peak
    d = (hours - (shape.peak - 3.5) + 12.0) % 24.0 - 12.0
    x = x ** shape.sharp * (1 - 0.08 * np.exp(-d * d / 0.8))
    p = shape.night + (1 - shape.night) * x
    return (p / p.mean()).tolist()


_BUCKET_S = 60.0  # arrivals are drawn per bucket
_ARRIVALS: dict[str, Callable[[EventMaker, float, list], None]] = {
    "support-bot": support_session,
    "order-agent": order_agent_session,
    "research-agent": research_run,
    "code-assistant": code_session,
}
# minute-level burstiness: an AR(1) log-multiplier per app with ~20 min correlation
_BURST_SIGMA = 0.15
_BURST_KEEP = math.exp(-_BUCKET_S / (20 * MINUTE))
_BURST_INNOVATION = _BURST_SIGMA * math.sqrt(1 - _BURST_KEEP * _BURST_KEEP)


def stream(sim: Simulation, seed: np.random.SeedSequence, id_keys: tuple[int, int],
           incident_events: list[tuple[int, dict]]) -> Iterator[dict]:
    """Events from ``sim.start`` to ``sim.end`` in time order, the incident runs' events merged in."""
    maker = EventMaker(sim, RandomStream(seed), IdMaker(id_keys[0]), IdMaker(id_keys[1]))
    arrivals_per_s = {app: sim.rate * shape.share / shape.events_per_arrival for app, shape in APPS.items()}
    burst = {app: 0.0 for app in APP_NAMES}

    def sessions(b: float, width: float) -> Iterator[tuple[int, dict]]:
        for app in APP_NAMES:
            burst[app], arrivals = arrival_times(maker.rng, b, width, arrivals_per_s[app] * sim.load.at(app, b),
                                                 burst[app])
            for t0 in arrivals:
                new: list[tuple[int, dict]] = []
                _ARRIVALS[app](maker, t0, new)
                yield from new

    return play(sim, incident_events, sessions)


def arrival_times(rng: RandomStream, b: float, width: float, per_s: float, burst: float) -> tuple[float, list[float]]:
    """Poisson arrivals in ``[b, b + width)`` at ``per_s`` times the wandering burstiness factor;
    returns that factor's new log and the sorted arrival times."""
    burst = burst * _BURST_KEEP + _BURST_INNOVATION * rng.standard_normal()
    count = rng.poisson(per_s * math.exp(burst - _BURST_SIGMA * _BURST_SIGMA / 2) * width)
    return burst, sorted(b + width * rng.uniform() for _ in range(count))


def play(sim: Simulation, scripted: list[tuple[int, dict]],
         sessions: Callable[[float, float], Iterator[tuple[int, dict]]]) -> Iterator[dict]:
    """The events of ``scripted`` and of each bucket's ``sessions(start, width)``, in time order."""
    start_ms, end_ms = to_ms(sim.start), to_ms(sim.end)
    waiting: list[tuple[int, int, dict]] = []  # (ms, seq, event): seq keeps ties in arrival order
    seq = 0
    for ms, ev in scripted:
        seq += 1
        waiting.append((ms, seq, ev))
    heapq.heapify(waiting)
    b = sim.start
    while b < sim.end:
        b_end = min(b + _BUCKET_S, sim.end)
        for ms, ev in sessions(b, b_end - b):
            if ms < end_ms:
                seq += 1
                heapq.heappush(waiting, (ms, seq, ev))
        # everything before the bucket's end is final: later arrivals complete later
        cut = to_ms(b_end)
        while waiting and waiting[0][0] < cut:
            ms, _seq, ev = heapq.heappop(waiting)
            if ms >= start_ms:
                yield ev
        b = b_end
    while waiting:
        ms, _seq, ev = heapq.heappop(waiting)
        if start_ms <= ms < end_ms:
            yield ev
