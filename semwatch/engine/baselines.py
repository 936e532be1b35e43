"""Small plain-data baselines for the numeric spike detectors (run_outlier.py, runaway_loop.py, rate_spike.py).

Two estimators, both plain data (``array('d')`` and floats) so that a segment's state record is a
few kilobytes and replays identically:

- :class:`SampleRing` — robust location and scale (median and MAD) of the recent past on a log
  scale, from a ring of at most ``size`` samples taken at most once per ``sample_every_s`` of event
  time. A sample may be *claimed* (a run starts) and updated in place while it grows (the run's
  cumulative tokens), so one ring serves per-event values and per-run totals alike. Why not River:
  ``river.stats.RollingQuantile(window_size=256)`` pickles to ~4.4 kB, gives one quantile and no
  scale, and cannot update a sample in place; ``river.stats.Quantile`` (P², 0.3 kB) never forgets.

- :class:`DailyBaseline` — the expected value of a rate that follows the time of day: an EWMA of
  the log rate per hour-of-day slot (interpolated between slot centres), plus a slower offset that
  carries the weekday/weekend level, with a fast overall EWMA as the fallback while a slot is
  unlearned, and a per-slot variance of the residual for a z-like score.

>>> ring = SampleRing.empty(8)
>>> for i, v in enumerate([10, 11, 9, 10, 12, 10, 9, 11]):
...     ring.add(math.log1p(v), float(i), sample_every_s=0)
>>> ring.refresh(now=8.0, finished_before=8.0)
8
>>> round(math.expm1(ring.median), 1)
10.0
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

import numpy as np

from semwatch.engine.state import PlainState, state_type

NAN = float("nan")


def _median_sorted(values) -> float:
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])


@state_type("sample_ring")
@dataclass(slots=True)
class SampleRing(PlainState):
    """Recent samples (log scale) with a cached median and MAD. See the module docstring."""

    values: array = field(default_factory=lambda: array("d"))
    stamps: array = field(default_factory=lambda: array("d"))  # event time of each sample's last write
    claimed: int = 0  # tickets handed out so far; ticket t lives in slot t % size while claimed - t <= size
    last_claim: float = -math.inf
    # Cached statistics (recomputed by refresh()).
    median: float = NAN
    scale: float = NAN  # 1.4826 * MAD: the standard deviation of a normal sample
    top: float = NAN  # the top_rank-th largest sample (the recent tail, robust to one outlier)
    count: int = 0  # samples behind median/scale
    refreshed_at: float = -math.inf
    writes: int = 0  # writes since the last refresh
    fresh: int = 0  # samples claimed since the last refresh
    capacity: int = 0  # the ring's size; the arrays grow up to it

    @classmethod
    def empty(cls, size: int) -> "SampleRing":
        """A ring of ``size`` samples whose arrays grow as samples come: most segments of a
        long-tail deployment never fill a 256-sample ring, and a full one is 4 kB.

        >>> ring = SampleRing.empty(3)
        >>> for t in range(5):
        ...     ring.add(float(t), now=float(t), sample_every_s=0)
        >>> list(ring.values), ring.size  # slots 0 and 1 were reused by samples 3 and 4
        ([3.0, 4.0, 2.0], 3)

        A ring pickled before ``capacity`` existed had full-size arrays and keeps their size:

        >>> old = SampleRing(values=array("d", [NAN]) * 4, stamps=array("d", [0.0]) * 4)
        >>> old.size, old.owns(old.claim(0.0, 0))
        (4, True)
        """
        return cls(capacity=size)

    @property
    def size(self) -> int:
        return self.capacity or len(self.values)  # rings pickled before ``capacity`` were full-size

    def claim(self, now: float, sample_every_s: float) -> int:
        """A ticket for a new sample (-1 when sampling is throttled). The slot starts empty."""
        if now - self.last_claim < sample_every_s:
            return -1
        ticket = self.claimed
        self.claimed += 1
        self.fresh += 1
        self.last_claim = now
        slot = ticket % self.size
        if slot == len(self.values):  # still growing: tickets are claimed in order
            self.values.append(NAN)
            self.stamps.append(now)
        else:
            self.values[slot] = NAN
            self.stamps[slot] = now
        return ticket

    def owns(self, ticket: int) -> bool:
        # A ticket this ring never handed out (the run's state is newer than the ring's: a crash
        # between their changelog records, then the events replayed) owns nothing.
        return 0 <= ticket < self.claimed and self.claimed - ticket <= self.size \
            and ticket % self.size < len(self.values)

    def write(self, ticket: int, value: float, now: float) -> None:
        """Set (or update) the sample of a ticket that still owns its slot."""
        if self.owns(ticket):
            slot = ticket % self.size
            self.values[slot] = value
            self.stamps[slot] = now
            self.writes += 1

    def forget(self, ticket: int) -> None:
        """Withdraw a sample (its run was flagged: never learn from what was flagged)."""
        if self.owns(ticket):
            self.values[ticket % self.size] = NAN

    def add(self, value: float, now: float, sample_every_s: float) -> None:
        """Claim and write in one step (per-event samples)."""
        ticket = self.claim(now, sample_every_s)
        if ticket >= 0:
            self.write(ticket, value, now)

    def due(self, now: float, refresh_s: float, min_new: int) -> bool:
        """Time to recompute: ``refresh_s`` (event time) passed and ``min_new`` new samples came
        (or anything changed and ten times ``refresh_s`` passed)."""
        if not self.writes:
            return False
        elapsed = now - self.refreshed_at
        return (elapsed >= refresh_s and self.fresh >= min_new) or elapsed >= 10 * refresh_s

    def refresh(self, now: float, finished_before: float, min_scale: float = 0.0,
                top_rank: int = 2) -> int:
        """Recompute median, MAD and the ``top_rank``-th largest value over the samples last
        written at or before ``finished_before``; returns how many there were."""
        v = np.frombuffer(self.values)
        xs = v[(np.frombuffer(self.stamps) <= finished_before) & (v == v)]  # a copy
        self.refreshed_at = now
        self.writes = self.fresh = 0
        n = self.count = int(xs.size)
        if not n:
            self.median = self.scale = self.top = NAN
            return 0
        xs.sort()
        med = _median_sorted(xs)
        dev = np.abs(xs - med)
        dev.sort()
        self.median = float(med)
        self.scale = max(1.4826 * float(_median_sorted(dev)), min_scale)
        self.top = float(xs[-min(top_rank, n)])
        return n


@state_type("daily_baseline")
@dataclass(slots=True)
class DailyBaseline(PlainState):
    """Expected log value by time of day. See the module docstring.

    ``predict(t)`` gives (mean, sd) on the log scale; ``learn(t, y)`` folds in one observation.
    """

    slot_mean: array = field(default_factory=lambda: array("d"))  # EWMA of y per slot
    slot_weight: array = field(default_factory=lambda: array("d"))  # samples seen per slot (weighted)
    slot_var: array = field(default_factory=lambda: array("d"))  # EW variance of the residual per slot
    slot_var_n: array = field(default_factory=lambda: array("d"))
    fast: float = NAN  # overall EWMA of y (fallback while the slot is unlearned)
    offset: float = 0.0  # EWMA of y - slot_mean: today's level relative to the usual day
    var_all: float = 0.0  # EW variance of the residual over all slots
    n: int = 0  # observations learned

    @classmethod
    def empty(cls, slots: int = 24) -> "DailyBaseline":
        zeros = array("d", [0.0]) * slots
        return cls(slot_mean=array("d", zeros), slot_weight=array("d", zeros),
                   slot_var=array("d", zeros), slot_var_n=array("d", zeros))

    def _position(self, t: float) -> tuple[int, int, float]:
        slots = len(self.slot_mean)
        pos = (t % 86400.0) / 86400.0 * slots - 0.5  # slot centres at half-slots
        i0 = math.floor(pos)
        w = pos - i0
        return i0 % slots, (i0 + 1) % slots, w

    def seasonal(self, t: float, min_slot_samples: float) -> float:
        """The usual value at time ``t`` from the learned slots (NaN while unlearned)."""
        i0, i1, w = self._position(t)
        if self.slot_weight[i0] < min_slot_samples or self.slot_weight[i1] < min_slot_samples:
            return NAN
        return self.slot_mean[i0] * (1.0 - w) + self.slot_mean[i1] * w

    def predict(self, t: float, min_slot_samples: float, min_sd: float) -> tuple[float, float]:
        season = self.seasonal(t, min_slot_samples)
        mean = self.fast if season != season else season + self.offset
        i0, i1, w = self._position(t)
        i = i0 if w < 0.5 else i1
        var = self.slot_var[i] if self.slot_var_n[i] >= min_slot_samples else self.var_all
        # A quiet slot never claims less spread than a quarter of the overall variance.
        var = max(var, 0.25 * self.var_all, min_sd * min_sd)
        return mean, math.sqrt(var)

    def learn(self, t: float, y: float, *, a_fast: float, a_offset: float, a_slot: float,
              a_var: float, min_slot_samples: float, min_sd: float, clip_sd: float = 0.0) -> None:
        """Fold in one observation. With ``clip_sd`` > 0 an observation further than that many sd
        from the prediction counts as if it were at that distance (a Huber-like robust EWMA, so a
        level shift below the alarm threshold is not learned in a few steps)."""
        if self.n:
            mean, sd = self.predict(t, min_slot_samples, min_sd)
            if clip_sd > 0 and self.n >= 10:
                lim = clip_sd * sd
                y = mean + lim if y > mean + lim else (mean - lim if y < mean - lim else y)
            r2 = (y - mean) ** 2
            i0, i1, w = self._position(t)
            i = i0 if w < 0.5 else i1
            k = max(a_var, 1.0 / (self.slot_var_n[i] + 1.0))
            self.slot_var[i] += k * (r2 - self.slot_var[i])
            self.slot_var_n[i] += 1.0
            self.var_all += max(a_var, 1.0 / (self.n + 1.0)) * (r2 - self.var_all)
        self.fast = y if self.n == 0 else self.fast + a_fast * (y - self.fast)
        i0, i1, w = self._position(t)
        # The offset follows the day's level wherever the usual day is known (even partly).
        if self.slot_weight[i0] > 0 and self.slot_weight[i1] > 0:
            season = self.slot_mean[i0] * (1.0 - w) + self.slot_mean[i1] * w
            self.offset += a_offset * (y - season - self.offset)
        for i, wi in ((i0, 1.0 - w), (i1, w)):
            if wi <= 0.0:
                continue
            if self.slot_weight[i] <= 0.0:
                self.slot_mean[i] = y
            else:
                k = wi * max(a_slot, 1.0 / (self.slot_weight[i] + 1.0))
                self.slot_mean[i] += k * (y - self.slot_mean[i])
            self.slot_weight[i] += wi
        self.n += 1


def ewma_alpha(step_s: float, halflife_s: float) -> float:
    """The EWMA weight of one observation every ``step_s`` for a half-life of ``halflife_s``."""
    return 1.0 - 0.5 ** (step_s / halflife_s)
