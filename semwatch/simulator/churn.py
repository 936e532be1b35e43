"""Benign churn, deliberately left in as false-alarm material: prompt rollouts, model swaps, and
short provider rate-limit bursts.

Rollouts (some canaried, some rolled back) shift prompt length, verbosity and refusal readiness a
little; model swaps go to similarly priced models. Both keep clear of the routes' incidents. The
bursts are real errors, labelled as optional ``threshold`` windows.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from semwatch.simulator.clock import DAY, HOUR, MINUTE
from semwatch.simulator.randomness import RandomStream
from semwatch.simulator.routes import MODEL_SWAP, ROLLOUT, Route, Routes, Schedule, rollout
from semwatch.simulator.world import PROVIDERS

_ATTEMPTS = 25  # to find a free place for a change, before giving up on it

#: (provider, start, end, extra share of its calls that are rate-limited)
RateLimitBurst = tuple[str, float, float, float]


def schedule_churn(seed: np.random.SeedSequence, routes: Routes, schedule: Schedule, start: float,
                   duration: float) -> list[RateLimitBurst]:
    """Schedule rollouts and model swaps; returns the provider rate-limit bursts."""
    rng = RandomStream(seed, 1024)
    end = start + duration
    days = duration / DAY
    # at least one of each on runs long enough to show them
    rollouts = rng.poisson(3.0 * days)
    if duration >= HOUR:
        rollouts = max(1, rollouts)

    def draw_rollout() -> tuple[Route, float, float, dict]:
        route = rng.pick(routes.all)
        t = rng.uniform_between(start + 5 * MINUTE, end - 5 * MINUTE)
        return (route, t, *draw_rollout_plan(rng, t))

    schedule_changes(schedule, rollouts, ROLLOUT, 2.0 * HOUR, draw_rollout)

    swaps = rng.poisson(0.8 * days)
    if duration >= 12 * HOUR:
        swaps = max(1, swaps)

    def draw_swap() -> tuple[Route, float, float, dict]:
        route = rng.pick(routes.all)
        t = rng.uniform_between(start + 5 * MINUTE, end - 5 * MINUTE)
        return route, t, t, {"pick": rng.uniform()}

    schedule_changes(schedule, swaps, MODEL_SWAP, 1.0 * HOUR, draw_swap)

    bursts = []
    for _ in range(rng.poisson(0.7 * days)):
        provider = rng.pick(PROVIDERS)
        t0 = rng.uniform_between(start, end)
        bursts.append((provider, t0, t0 + rng.uniform_between(3, 15) * MINUTE, rng.uniform_between(0.05, 0.25)))
    return bursts


def draw_rollout_plan(rng: RandomStream, t: float) -> tuple[float, dict]:
    """A benign rollout at ``t``: canaried 40 % of the time, rolled back 15 %; returns when it is
    settled (promoted or rolled back) and the change's data."""
    canary = rng.chance(0.4)
    canary_share = rng.uniform_between(0.05, 0.25) if canary else 0.0
    canary_s = rng.uniform_between(20, 90) * MINUTE if canary else 0.0
    rollback_after_s = rng.uniform_between(30, 180) * MINUTE if rng.chance(0.15) else None
    draws = (rng.uniform(), rng.uniform(), rng.uniform())
    return t + canary_s + (rollback_after_s or 0.0), rollout(canary_share, canary_s, rollback_after_s, draws)


def schedule_changes(schedule: Schedule, count: int, kind: str, gap: float,
                      draw: Callable[[], tuple[Route, float, float, dict]]) -> None:
    """Place ``count`` changes, each where ``draw`` first finds a free window (``gap`` from other changes)."""
    for _ in range(count):
        for _attempt in range(_ATTEMPTS):
            route, t, t_last, data = draw()
            if schedule.is_free(route, t, t_last, gap):
                schedule.add(route, t, kind, data)
                schedule.note_change(route, t)
                break
