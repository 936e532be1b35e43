"""Quiet support-bot routes: ``warranty`` (about one request a minute in the daytime) and
``accessibility`` (about three), where a false-refusal spike has few requests to show in.

Traffic follows the support-bot load curve (the daytime level, 10-20 UTC on a weekday, is the
route's ``day_per_min`` in chat turns; about a fifth of it at night, less at weekends), whatever
``rate`` says: a quiet route is quiet by its absolute traffic.  Ordinary requests are refused at
1.5-2 %, shifted a little by benign prompt rollouts (about one every two days per route, some
canaried, some rolled back).

Incidents (``incidents=True``): once per simulated day each, starting between 11:00 and 18:00 UTC
(never in the first 3 hours), a new prompt version refuses 40 % of ordinary requests on
``warranty`` and 12 % on ``accessibility`` for one hour, then is rolled back; labelled
``false_refusal_spike`` like the busy routes' spikes (segment = {app, route, model, prompt_version}).

Determinism: these routes are not in ``Routes.all`` nor in the app's traffic split, and their
schedule, churn, traffic and annotations draw from streams of their own, so every event and label of
the busy routes stays what it was; their events are merged into the stream by time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterator

import numpy as np

from semwatch.simulator import traffic
from semwatch.simulator.apps.support_bot import support_session
from semwatch.simulator.calls import EventMaker
from semwatch.simulator.churn import draw_rollout_plan, schedule_changes
from semwatch.simulator.clock import DAY, HOUR, MINUTE
from semwatch.simulator.incidents import WARMUP_S, plan_refusal_spike
from semwatch.simulator.randomness import IdMaker, RandomStream
from semwatch.simulator.routes import ROLLOUT, Route, Routes, Schedule
from semwatch.simulator.world import APPS, QUIET_ROUTES

if TYPE_CHECKING:
    from semwatch.simulator.simulation import Simulation

APP = "support-bot"
SPIKE_S = HOUR
_SPIKE_STARTS = (11 * HOUR, 18 * HOUR)  # of the day: the whole hour falls in daytime traffic
_LAST_S = 10 * MINUTE  # no spike ends this close to the end of the run
_ROLLOUTS_PER_DAY = 0.5  # per route
_ID_OFFSET = 1 << 41  # the quiet routes' run and event ids are counted apart from everything else's
_DAYTIME = (10 * 60, 20 * 60)  # minutes of the day over which day_per_min is the mean


def schedule_quiet_routes(incident_seed: np.random.SeedSequence, churn_seed: np.random.SeedSequence,
                          routes: Routes, schedule: Schedule, start: float, duration: float,
                          incidents: bool) -> None:
    """The quiet routes' refusal spikes (when ``incidents``), then their benign rollouts clear of them."""
    end = start + duration
    if incidents:
        rng = RandomStream(incident_seed, 1024)
        first, last = start + WARMUP_S, end - _LAST_S - SPIKE_S
        for day in range(int(start // DAY), int(math.ceil(end / DAY))):
            for quiet, route in zip(QUIET_ROUTES, routes.quiet):
                u = rng.uniform()  # drawn whether or not the day has room: later days stay put
                lo, hi = max(first, day * DAY + _SPIKE_STARTS[0]), min(last, day * DAY + _SPIKE_STARTS[1])
                if lo <= hi:
                    t0 = lo + u * (hi - lo)
                    plan_refusal_spike(rng, schedule, route, t0, t0 + SPIKE_S, quiet.spike_rate, end)
    if duration <= 10 * MINUTE:
        return
    rng = RandomStream(churn_seed, 1024)
    for route in routes.quiet:
        def draw(route: Route = route) -> tuple[Route, float, float, dict]:
            t = rng.uniform_between(start + 5 * MINUTE, end - 5 * MINUTE)
            return (route, t, *draw_rollout_plan(rng, t))

        schedule_changes(schedule, rng.poisson(_ROLLOUTS_PER_DAY * duration / DAY), ROLLOUT, 2.0 * HOUR, draw)


def quiet_stream(sim: Simulation, seed: np.random.SeedSequence, id_keys: tuple[int, int]) -> Iterator[dict]:
    """The quiet routes' chats from ``sim.start`` to ``sim.end``, in time order."""
    maker = EventMaker(sim, RandomStream(seed), IdMaker(id_keys[0], _ID_OFFSET), IdMaker(id_keys[1], _ID_OFFSET))
    curve = traffic.daily_curve(APP)
    daytime = sum(curve[_DAYTIME[0]:_DAYTIME[1]]) / (_DAYTIME[1] - _DAYTIME[0])
    # chats a second at a load of 1.0: day_per_min turns a minute at the daytime load
    per_s = [q.day_per_min / 60.0 / APPS[APP].events_per_arrival / daytime for q in QUIET_ROUTES]
    burst = [0.0] * len(QUIET_ROUTES)

    def sessions(b: float, width: float) -> Iterator[tuple[int, dict]]:
        load = sim.load.at(APP, b)
        for i, route in enumerate(sim.routes.quiet):
            burst[i], arrivals = traffic.arrival_times(maker.rng, b, width, per_s[i] * load, burst[i])
            for t0 in arrivals:
                new: list[tuple[int, dict]] = []
                support_session(maker, t0, new, route)
                yield from new

    return traffic.play(sim, [], sessions)
