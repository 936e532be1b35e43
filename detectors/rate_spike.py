"""``rate_spike``: aggregate burn per segment against a time-of-day baseline.

The field summed per event-time bucket (tokens/min, $/min, events/min with ``field: count``, active
runs per bucket with ``field: runs`` — one agent run's burst of steps counts once, so a storm of
requests stands out from the steps of a few long runs) or its
per-event mean (``aggregate: mean`` — $/event, which does not move with load; ``geomean``, the
geometric mean of the positive values, is the typical event's value: one long, expensive agent run
moves it little, a switch to a pricier model moves it all the way), over a recent window, against a
baseline that respects the time of day (:class:`semwatch.engine.baselines.DailyBaseline`). A breach
needs the ratio to the usual value, an absolute change and a z-like score vs the slot's learned
variability, for ``for_s``; it clears below ``clear_ratio`` for ``clear_for_s``. The baseline does
not learn while pending or firing; with ``max_unlearnt_s`` it does not learn windows past the ratio
and increase lines that are not (yet) significant either, for up to that long: on a young baseline,
learning them widens the very spread they are judged by.
"""

from __future__ import annotations

import math
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from semwatch.contract import RunEvent
from semwatch.engine.baselines import DailyBaseline, ewma_alpha
from semwatch.engine.detector import (
    SEVERITY_ORDER,
    Context,
    Detector,
    DetectorParams,
    SegmentState,
    escalate,
    register,
    unit_event,
)
from semwatch.engine.fields import default_kind, segment_getter, value_getter
from semwatch.engine.formatting import amount, duration, segment_text
from semwatch.engine.lifecycle import Lifecycle, LifecyclePolicy
from semwatch.engine.state import state_type
from semwatch.engine.tuning import Point, Rel, SignalProbe

KindName = Literal["token_spike", "cost_spike", "threshold"]
Direction = Literal["up", "down", "both"]
INF = math.inf
MAX_RUNS_PER_BUCKET = 4096  # runs told apart per bucket (field: runs); beyond, every event counts


class RateSpikeParams(DetectorParams):
    type: str = "rate_spike"
    group_by: tuple[str, ...] = ("app",)
    severity: str = Field(default="SEV-2", pattern=r"^SEV-[123]$")
    # Incident kind; by default from the field (token_spike / cost_spike / threshold).
    kind: Optional[KindName] = None
    # What is summed or averaged per event: total_tokens, cost_usd, latency_s, metrics.x, ... or
    # count (1 per event: the event rate).
    field: str = Field(default="total_tokens", min_length=1, max_length=128)
    # sum: field per minute (burn rate, moves with load); mean: field per event (load-independent);
    # geomean: the typical event (geometric mean of positive values, log(value + log_floor)).
    aggregate: Literal["sum", "mean", "geomean"] = "sum"
    direction: Direction = "up"
    bucket_s: float = Field(default=30.0, gt=0)  # event-time bucket; evaluated as each bucket closes
    window_s: float = Field(default=120.0, gt=0)  # the recent window compared with the baseline
    # Breach: all of ratio, absolute change and z.
    min_ratio: float = Field(default=3.0, gt=1)  # observed / usual (down: usual / observed)
    # Absolute change, in field units per minute (sum) or per event (mean).
    min_increase: float = Field(default=0.0, ge=0)
    # Added before taking logs (same units as the observed value): > 0 damps the log scale for
    # values near zero. 0 = plain logs.
    log_floor: float = Field(default=0.0, ge=0)
    z_threshold: float = Field(default=4.0, gt=0)  # (log observed - log usual) / the slot's learned sd
    min_volume: int = Field(default=20, ge=1)  # events in the window, or nothing is decided
    for_s: float = Field(default=30.0, ge=0)  # breach held this long before the trigger
    clear_ratio: float = Field(default=1.5, ge=1)  # firing clears below this ratio (hysteresis) ...
    clear_for_s: float = Field(default=300.0, ge=0)  # ... held this long before the resolve
    # Baseline (log scale): 24 hour-of-day slots, learned over days; a day-level offset; a fast
    # overall EWMA as the fallback while a slot has fewer than min_slot_samples samples.
    slots: int = Field(default=24, ge=1, le=288)
    slot_halflife_days: float = Field(default=3.0, gt=0)
    offset_halflife_s: float = Field(default=3 * 3600.0, gt=0)
    fast_halflife_s: float = Field(default=1800.0, gt=0)
    min_slot_samples: int = Field(default=20, ge=1)
    min_sd: float = Field(default=0.1, gt=0)  # floor of the sd (log units, ~10 %)
    # Learning clips an observation to this many sd from the prediction (robust EWMA); 0 = off.
    learn_clip_sd: float = Field(default=3.0, ge=0)
    warmup_s: float = Field(default=3600.0, ge=0)  # learning time before the first decision
    # Firing this long: accept the level as the new normal (resolve, re-learn). 0 = never.
    max_firing_s: float = Field(default=6 * 3600.0, ge=0)
    # Windows past the material lines (ratio and increase) are not learnt while they last, at most
    # this long; a level that stays there longer without ever being significant is the new normal.
    # 0 = learn them (the default): right for heavy-tailed sums (tokens, cost of a few long agent
    # runs), whose spread those windows are part of; counts of runs are not heavy-tailed.
    max_unlearnt_s: float = Field(default=0.0, ge=0)
    # Severity goes one level up for each step of the ratio ...
    escalate_ratio: tuple[float, ...] = (10.0, 50.0)
    # ... or of the absolute change (field units per minute or per event); empty = off.
    escalate_increase: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> "RateSpikeParams":
        if self.window_s < self.bucket_s:
            raise ValueError("window_s must be at least bucket_s")
        if self.field in ("count", "runs") and self.aggregate in ("mean", "geomean"):
            raise ValueError(f"field: count with aggregate: {self.aggregate} is always 1; "
                             "use aggregate: sum")
        if self.clear_ratio > self.min_ratio:
            raise ValueError("clear_ratio must not exceed min_ratio (hysteresis)")
        return self


@state_type("rate_spike_segment")
@dataclass(slots=True)
class RateState(SegmentState):
    bucket: int = -1  # index (ts // bucket_s) of the open bucket
    b_sum: float = 0.0
    b_n: int = 0
    b_top: float = -INF
    b_top_ids: Optional[tuple] = None  # (run_id, event_id) of the bucket's largest value
    b_runs: list = field(default_factory=list)  # crc32 of the runs seen in the open bucket (field: runs)
    sums: array = field(default_factory=lambda: array("d"))  # closed buckets of the window (ring)
    counts: array = field(default_factory=lambda: array("d"))
    tops: list = field(default_factory=list)
    closed: int = 0
    learn_from: float = math.nan  # event time of the first learned bucket (warm-up)
    base: DailyBaseline = field(default_factory=DailyBaseline)
    lc: Lifecycle = field(default_factory=Lifecycle)
    # Last decision (for the resolve summary and debugging).
    last_obs: float = math.nan
    last_expected: float = math.nan
    last_ratio: float = math.nan
    material_since: float = math.nan  # start of the current run of material windows (not learnt)


@register
class RateSpike(Detector):
    """Aggregate burn per segment vs a time-of-day baseline.

    >>> RateSpike.Params(name="cost-per-route", type="rate_spike", field="cost_usd",
    ...                  aggregate="mean").aggregate
    'mean'
    """

    type_name = "rate_spike"
    # Ratio to the usual level and sustain.
    tuning_space = {"min_ratio": Rel(2 / 3, 1.0, 1.5), "for_s": Rel(0.5, 1.0, 2.0)}
    kind = "token_spike"
    Params = RateSpikeParams

    def __init__(self, params: RateSpikeParams, env):
        super().__init__(params, env)
        p = params
        self.kind = p.kind or default_kind(p.field)
        self._count = p.field == "count"
        self._runs = p.field == "runs"
        self._fieldname = p.field
        self._segment = segment_getter(p.group_by)
        self._value = value_getter(p.field)
        self._bucket_s = p.bucket_s
        self._geo = p.aggregate == "geomean"
        self._mean = p.aggregate in ("mean", "geomean")  # per event, not per minute
        self._w = max(1, int(round(p.window_s / p.bucket_s)))
        self._window_min = self._w * p.bucket_s / 60.0
        self._floor = p.log_floor
        self._policy = LifecyclePolicy(for_s=p.for_s, clear_for_s=p.clear_for_s)
        slot_samples_per_day = (86400.0 / p.slots) / p.bucket_s
        self._a = dict(
            a_fast=ewma_alpha(p.bucket_s, p.fast_halflife_s),
            a_offset=ewma_alpha(p.bucket_s, p.offset_halflife_s),
            a_slot=ewma_alpha(1.0, p.slot_halflife_days * slot_samples_per_day),
            a_var=ewma_alpha(1.0, p.slot_halflife_days * slot_samples_per_day),
            min_slot_samples=float(p.min_slot_samples), min_sd=p.min_sd, clip_sd=p.learn_clip_sd)
        self._max_gap = int(86400 / p.bucket_s)
        self._up = p.direction in ("up", "both")
        self._down = p.direction in ("down", "both")

    def _new_state(self) -> RateState:
        return RateState(segment={}, sums=array("d", [0.0]) * self._w,
                         counts=array("d", [0.0]) * self._w, tops=[None] * self._w,
                         base=DailyBaseline.empty(self.params.slots))

    # -- per event -------------------------------------------------------------------------------
    def observe(self, event: RunEvent, ctx: Context) -> None:
        if self._count or self._runs:
            v: Optional[float] = 1.0
        else:
            v = self._value(event)
            if v is None:
                return
            if self._geo:
                if v <= 0:
                    return  # a failed call costs nothing: it says nothing about the typical price
                v = math.log(v + self._floor)
        ts = event.ts
        st = ctx.state(self, self._segment(event), self._new_state, ts)
        if st is None:
            return
        b = int(ts // self._bucket_s)
        if b > st.bucket:
            if st.bucket >= 0:
                self._roll(st, b, ctx)
            st.bucket = b
        elif b < st.bucket:
            # Late: into its closed bucket while that is still in the window, else dropped.
            if st.bucket - b <= self._w:
                i = b % self._w
                st.sums[i] += v
                st.counts[i] += 1.0
            return
        if self._runs:  # each run once per bucket
            who = zlib.crc32(event.run_id.encode())
            if who in st.b_runs:
                v = 0.0
            elif len(st.b_runs) < MAX_RUNS_PER_BUCKET:
                st.b_runs.append(who)
        st.b_sum += v
        st.b_n += 1
        if v > st.b_top:
            st.b_top = v
            st.b_top_ids = (event.run_id, event.event_id)

    def advance(self, state: SegmentState, watermark: float, ctx: Context) -> None:
        st = state
        if not isinstance(st, RateState) or st.bucket < 0:
            return
        b = int(watermark // self.params.bucket_s)  # buckets ending at or before the watermark
        if b > st.bucket:
            self._roll(st, b, ctx)
            st.bucket = b
            ctx.changed(self, st)

    # -- buckets ---------------------------------------------------------------------------------
    def _roll(self, st: RateState, new_bucket: int, ctx: Context) -> None:
        """Close the open bucket and every empty one before ``new_bucket``."""
        b = st.bucket
        self._close(st, b, st.b_sum, st.b_n, st.b_top_ids, ctx)
        st.b_sum, st.b_n, st.b_top, st.b_top_ids = 0.0, 0, -INF, None
        st.b_runs = []
        gap = new_bucket - b - 1
        if gap > self._max_gap:
            # A silence of more than a day: start the window afresh and learn nothing from it.
            for i in range(self._w):
                st.sums[i] = st.counts[i] = 0.0
                st.tops[i] = None
            return
        for k in range(b + 1, new_bucket):
            self._close(st, k, 0.0, 0, None, ctx)

    def _close(self, st: RateState, b: int, total: float, n: int, top, ctx: Context) -> None:
        i = b % self._w
        st.sums[i] = total
        st.counts[i] = float(n)
        st.tops[i] = top
        st.closed += 1
        if st.closed < self._w:
            return  # the window is not full yet
        self._evaluate(st, (b + 1) * self.params.bucket_s, ctx)

    # -- decisions -------------------------------------------------------------------------------
    def _evaluate(self, st: RateState, t_end: float, ctx: Context) -> None:
        p = self.params
        volume = sum(st.counts)
        total = sum(st.sums)
        if self._geo:
            x = math.exp(total / volume) - self._floor if volume > 0 else math.nan
        elif self._mean:
            x = total / volume if volume > 0 else math.nan
        else:
            x = total / self._window_min
        t_mid = t_end - 0.5 * p.window_s
        base = st.base
        floor = self._floor
        breached = material = False
        cleared = True
        lc = st.lc
        ready = base.n >= 10 and t_end - st.learn_from >= p.warmup_s
        y = math.log(max(x + floor, 1e-12)) if x == x else math.nan
        z = ratio = expected = math.nan
        if ready and volume >= p.min_volume and x == x:
            mean, sd = base.predict(t_mid, self._a["min_slot_samples"], p.min_sd)
            expected = max(math.exp(mean) - floor, 0.0)
            z = (y - mean) / sd
            up_ratio = x / expected if expected > 0 else (INF if x > 0 else 1.0)
            up = self._up and up_ratio >= p.min_ratio and x - expected >= p.min_increase
            down = self._down and up_ratio * p.min_ratio <= 1.0 and expected - x >= p.min_increase
            material = up or down
            breached = (up and z >= p.z_threshold) or (down and z <= -p.z_threshold)
            # The ratio in the direction watched (both: whichever way it moved).
            if not self._down:
                ratio = up_ratio
            elif not self._up:
                ratio = 1.0 / up_ratio if up_ratio > 0 else INF
            else:
                ratio = max(up_ratio, 1.0 / up_ratio if up_ratio > 0 else INF)
            cleared = not breached and ratio < p.clear_ratio
            st.last_obs, st.last_expected, st.last_ratio = x, expected, ratio
        elif lc.status != "ok" and volume < p.min_volume:
            cleared = True  # the traffic behind the problem is gone
        action = self._policy.step(lc, t_end, breached, cleared)
        if lc.status != "ok" and ratio == ratio:
            lc.peak = max(lc.peak, ratio)
        if action == "trigger":
            self._trigger(st, t_end, x, expected, z, ratio, int(volume), ctx)
        elif action == "resolve":
            self._resolve(st, t_end, x, ratio, ctx, accepted=False)
        elif lc.status == "firing" and p.max_firing_s and t_end - lc.fired_at >= p.max_firing_s:
            self._resolve(st, t_end, x, ratio, ctx, accepted=True)
            lc.status, lc.clear_since = "ok", None
            if y == y:  # the level it stuck at is the new normal
                season = base.seasonal(t_mid, self._a["min_slot_samples"])
                base.fast = y
                if season == season:
                    base.offset = y - season
        st.active = lc.active
        # Learn only from what is not (part of) a problem, and from windows with min_volume events
        # (decisions need them too; near-empty windows would only add noise to the log scale).
        # With max_unlearnt_s, a window past the material lines but not yet significant is not
        # learnt either: learning it widens the spread it is judged by, so a young baseline (the
        # first hours) talked itself out of a 4x storm (sd 0.38 -> 0.70 in ten minutes). A level
        # that is never significant is the new normal after max_unlearnt_s.
        if not material:
            st.material_since = math.nan
        elif st.material_since != st.material_since:
            st.material_since = t_end
        withheld = material and p.max_unlearnt_s > 0 and t_end - st.material_since < p.max_unlearnt_s
        if lc.status == "ok" and not breached and not withheld and y == y and volume >= p.min_volume:
            base.learn(t_mid, y, **self._a)
            if st.learn_from != st.learn_from:
                st.learn_from = t_end

    def _what(self) -> str:
        f = self._fieldname
        if self._geo:
            return {"cost_usd": "typical cost per event", "total_tokens": "typical tokens per event",
                    "latency_s": "typical latency"}.get(self._fieldname,
                                                         f"typical {self._fieldname}")
        if self._mean:
            return {"cost_usd": "cost per event", "total_tokens": "tokens per event",
                    "input_tokens": "input tokens per event",
                    "output_tokens": "output tokens per event"}.get(f, f"mean {f}")
        return {"cost_usd": "spend", "total_tokens": "token burn", "input_tokens": "input token burn",
                "output_tokens": "output token burn", "count": "event rate",
                "runs": "active runs"}.get(f, f"{f} per minute")

    def _fmt(self, x: float) -> str:
        return amount(self._fieldname, x) + ("" if self._mean else "/min")

    def _trigger(self, st: RateState, t_end: float, x: float, expected: float, z: float,
                 ratio: float, volume: int, ctx: Context) -> None:
        p = self.params
        lc = st.lc
        went = "up" if x >= expected else "down"
        severity = escalate(p.severity, ratio, p.escalate_ratio)
        if p.escalate_increase:
            severity = max(severity, escalate(p.severity, abs(x - expected), p.escalate_increase),
                           key=SEVERITY_ORDER.get)
        lc.severity = severity
        threshold = expected * p.min_ratio if went == "up" else expected / p.min_ratio
        summary = (f"{segment_text(st.segment)}: {self._what()} {went} {ratio:.3g}× — "
                   f"{self._fmt(x)} vs usual {self._fmt(expected)} over the last "
                   f"{duration(p.window_s)} ({volume} events)")
        ctx.emit(self.incident(
            action="trigger", segment=st.segment, ctx=ctx, severity=severity, summary=summary,
            window_start=lc.since - p.window_s, window_end=t_end, detected_at=t_end,
            observed=x, baseline=expected, threshold=threshold, score=z,
            evidence=self._evidence(st, volume)))

    def _resolve(self, st: RateState, t_end: float, x: float, ratio: float, ctx: Context,
                 accepted: bool) -> None:
        p = self.params
        lc = st.lc
        lasted = duration(t_end - lc.since)
        if accepted:
            summary = (f"{segment_text(st.segment)}: {self._what()} still {ratio:.3g}× usual after "
                       f"{lasted}; accepted as the new normal (baseline re-learns)")
        elif x == x and ratio == ratio:
            summary = (f"{segment_text(st.segment)}: {self._what()} back to {self._fmt(x)} "
                       f"({ratio:.3g}× usual) after {lasted}; peak {lc.peak:.3g}×")
        else:
            summary = (f"{segment_text(st.segment)}: {self._what()} problem over after {lasted} "
                       f"(traffic below min_volume); peak {lc.peak:.3g}×")
        ctx.emit(self.incident(
            action="resolve", segment=st.segment, ctx=ctx, severity=lc.severity, summary=summary,
            window_start=lc.since - p.window_s, window_end=t_end, detected_at=t_end,
            observed=x, baseline=st.last_expected, score=lc.peak,
            evidence={"peak_ratio": lc.peak, "accepted_as_normal": accepted}))
        lc.peak = 0.0

    def _evidence(self, st: RateState, volume: int) -> dict[str, Any]:
        p = self.params
        run_ids: list[str] = []
        event_ids: list[str] = []
        for top in st.tops:
            if top is not None and len(event_ids) < 5:
                if top[0] not in run_ids:
                    run_ids.append(top[0])
                event_ids.append(top[1])
        return {"run_ids": run_ids, "event_ids": event_ids, "events_in_window": volume,
                "field": self._fieldname, "aggregate": p.aggregate, "direction": p.direction,
                "window_s": p.window_s, "bucket_s": p.bucket_s}

    def probe(self, segment: dict[str, str], window: dict) -> SignalProbe:
        p = self.params
        last: list = [None]

        def read(engine, event) -> Optional[Point]:
            st = engine.get(self, segment)
            if st is None or st.closed == last[0]:
                return None
            last[0] = st.closed
            x, e = st.last_obs, st.last_expected
            thr = e * p.min_ratio if (e == e and p.direction != "down") else None
            return (st.bucket * p.bucket_s, x if x == x else None, e if e == e else None, thr, None)

        agg = "mean per event" if p.aggregate == "mean" else "per minute"
        return SignalProbe(f"{p.field} {agg} over {p.window_s:g} s", read,
                           "usual × min_ratio (z and min_increase must hold too)")

    # -- contract test hooks -----------------------------------------------------------------------
    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"name": "cost-per-route-test", "type": cls.type_name, "field": "cost_usd",
                "aggregate": "mean", "group_by": ["app", "route"], "warmup_s": 600,
                "min_volume": 5}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        t0 = 1_767_600_000.0
        normal = [unit_event(f"n{i}", f"r{i}", t0 + i * 5, input_tokens=800 + (i * 37) % 400,
                      output_tokens=200 + (i * 11) % 100, cost_usd=0.001 + (i % 7) * 0.0001)
                  for i in range(720)]  # 1 h, one event every 5 s
        t1 = t0 + 720 * 5
        anomalous = [unit_event(f"a{i}", f"ra{i}", t1 + i * 5, input_tokens=800, output_tokens=200,
                         cost_usd=0.02) for i in range(60)]
        return normal, anomalous
