"""``run_outlier``: one run (or one event) far above its segment's robust baseline.

A run's cumulative ``field`` (``per: run``) or a single event's value (``per: event``) is compared
with the median and MAD, on a log scale, of the segment's recent runs' totals (or events' values) —
see :class:`semwatch.engine.baselines.SampleRing`. It fires when the robust z reaches
``z_threshold`` *and* the value is ``min_ratio`` times the median *and* ``tail_ratio`` times the
recent tail (the 2nd largest sample; token counts are heavier-tailed than log-normal) *and* at least
``min_value``; per run only from ``min_steps`` steps on (one call cannot run away). The score comes
first, then learning; flagged runs are withdrawn from the baseline. Optional absolute caps
``max_steps`` / ``max_repeated_calls`` / ``max_value`` and the segment-relative repeat check
(``adaptive_repeats``) flag a run whatever the baseline says; ``runaway_loop`` turns those on.

One incident per segment problem: several outlying runs in one segment are one trigger whose
evidence lists their run ids; it resolves after ``quiet_s`` without a new outlier (and without a new
step of an outlying run, so a loop that keeps burning keeps it open).

Per-run state lives under the segment plus ``run_id`` (a separate small state per run, expired by
the engine after ``idle_ttl_s`` without events and capped by ``max_segments``), so the changelog only
carries what a batch touched.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from semwatch.contract import RunEvent
from semwatch.engine.baselines import SampleRing
from semwatch.engine.detector import (
    Context,
    Detector,
    DetectorParams,
    SegmentState,
    escalate,
    finite_or_none,
    register,
    unit_event,
)
from semwatch.engine.fields import default_kind, segment_getter, value_getter
from semwatch.engine.formatting import amount, duration, segment_text
from semwatch.engine.state import state_type
from semwatch.engine.tuning import Point, ProbeUnavailable, Rel, SignalProbe

KindName = Literal["token_spike", "cost_spike", "threshold"]
Direction = Literal["up", "down", "both"]
INF = math.inf
MAX_CALL_KEYS = 64  # distinct tool calls remembered per run (max_repeated_calls); later new ignored


class RunOutlierParams(DetectorParams):
    type: str = "run_outlier"
    group_by: tuple[str, ...] = ("app", "route")
    severity: str = Field(default="SEV-3", pattern=r"^SEV-[123]$")
    # Incident kind; by default token_spike for token fields/steps, cost_spike for cost_usd,
    # threshold for anything else.
    kind: Optional[KindName] = None
    # The value watched: total_tokens, input_tokens, output_tokens, cost_usd, latency_s, metrics.x,
    # feedback.x, or (per: run) steps — the number of events in the run.
    field: str = Field(default="total_tokens", min_length=1, max_length=128)
    # run: the run's cumulative value so far vs the totals of recent finished runs;
    # event: each event's value vs recent events' values.
    per: Literal["run", "event"] = "run"
    # up: flag values far above the baseline; down: far below (per: event only); both.
    direction: Direction = "up"
    # -- the adaptive part (robust z on a log scale) --
    adaptive: bool = True
    z_threshold: float = Field(default=6.0, gt=0)  # robust z = (log1p(x) - median) / (1.4826 MAD)
    min_ratio: float = Field(default=10.0, ge=1)  # and x >= min_ratio * median (down: <= median / min_ratio)
    # and (up) x >= tail_ratio * the 2nd largest recent sample: real token counts are heavier-tailed
    # than a log-normal, so the median/MAD alone would page on the day's largest normal run.
    tail_ratio: float = Field(default=3.0, ge=0)
    min_value: float = Field(default=0.0, ge=0)  # and x >= min_value (up): tiny values never page
    # per: run: the adaptive check needs at least this many steps — one call cannot run away, and
    # single huge calls are heavy-tailed but normal (watch those with per: event).
    min_steps: int = Field(default=3, ge=1)
    min_samples: int = Field(default=50, ge=5)  # warm-up: baseline samples before any adaptive flag
    baseline_size: int = Field(default=256, ge=16, le=4096)  # samples kept (a ring)
    sample_every_s: float = Field(default=5.0, ge=0)  # at most one new sample (run or event) per this
    run_gap_s: float = Field(default=180.0, ge=0)  # per run: a run idle this long counts as finished
    min_log_scale: float = Field(default=0.1, gt=0)  # floor of the robust scale (log units)
    refresh_s: float = Field(default=30.0, gt=0)  # recompute median/MAD/tail at most this often ...
    refresh_min_new: int = Field(default=4, ge=1)  # ... and once this many new samples came
    # -- absolute caps (per: run), flag a run whatever the baseline says --
    max_steps: Optional[int] = Field(default=None, ge=1)  # more steps (events) than this in one run
    max_value: Optional[float] = Field(default=None, gt=0)  # cumulative value above this in one run
    # More than this many tool calls in one run that repeat an earlier call of the run exactly
    # (same tool name and arguments): a loop, even one cycling through a few calls.
    max_repeated_calls: Optional[int] = Field(default=None, ge=1)
    # -- repeats relative to the segment (per: run) --
    # Judged on two measures, each against the same measure of the segment's other recent runs:
    # a run's exact repeats in all, and its highest stretch of repeats net of new calls (a loop
    # re-issues the same few calls with little new in between, long before its total stands out).
    adaptive_repeats: bool = False
    min_repeats: int = Field(default=5, ge=1)  # fewest exact repeats that can flag a run ...
    repeats_ratio: float = Field(default=3.0, ge=1)  # ... and this x the 2nd most repetitive other run
    # Runs in the segment's last repeats_memory_s before any verdict: the 2nd most repetitive of
    # fewer runs is no estimate of its tail.
    repeats_min_runs: int = Field(default=200, ge=1)
    repeats_memory_s: float = Field(default=86400.0, gt=0)  # how long a run's repeats are remembered
    # -- the incident --
    min_outliers: int = Field(default=1, ge=1)  # flagged runs/events (within quiet_s) before a trigger
    quiet_s: float = Field(default=600.0, gt=0)  # resolve after this long without a new outlier
    # Severity goes one level up from `severity` for every step reached by value/median (or value/cap).
    escalate_ratio: tuple[float, ...] = (50.0, 500.0)
    evidence_runs: int = Field(default=10, ge=1, le=100)  # run ids kept in the evidence
    # Per-run state: forgotten this long after a run's last event; the cap counts runs + segments.
    idle_ttl_s: float = Field(default=3600.0, gt=0)
    max_segments: int = Field(default=50000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "RunOutlierParams":
        if self.per == "run" and self.direction != "up":
            raise ValueError("per: run watches cumulative values, which only grow: use direction: up")
        if self.per == "event" and (self.max_steps is not None or self.max_repeated_calls is not None
                                    or self.adaptive_repeats or self.field == "steps"):
            raise ValueError("steps, max_steps, max_repeated_calls and adaptive_repeats need per: run")
        if self.per == "event" and self.max_value is not None and self.direction != "up":
            raise ValueError("max_value is an upper cap: use direction: up")
        if not self.adaptive and self.max_steps is None and self.max_value is None \
                and self.max_repeated_calls is None and not self.adaptive_repeats:
            raise ValueError("adaptive: false needs max_steps, max_value, max_repeated_calls or "
                             "adaptive_repeats, or nothing can fire")
        if self.field == "count":
            raise ValueError("field: count is for rate_spike; use field: steps (per: run) here")
        return self


@state_type("run_outlier_run")
@dataclass(slots=True)
class RunState(SegmentState):
    """One run's running totals (keyed by segment + run_id)."""

    first_ts: float = 0.0
    steps: int = 0
    total: float = 0.0
    has_value: bool = False
    ticket: int = -1  # its sample in the segment's ring (-1: not sampled)
    flagged: bool = False
    # max_repeated_calls: crc32 of (tool name, arguments) -> calls so far (<= MAX_CALL_KEYS keys)
    calls: Optional[dict] = None
    repeats: int = 0  # calls that repeated an earlier call of this run exactly
    # A leaky row of repeats up to the latest call: +1 per repeat, -1 per new call, never below 0
    # (a CUSUM of "this call is a repeat"): a stray new call in a loop dents it, not resets it ...
    streak: int = 0
    max_streak: int = 0  # ... and its highest value so far (a loop: nearly every call repeats)
    top_calls: int = 0  # the most calls of one (name, arguments) ...
    top_tool: Optional[str] = None  # ... and its tool name


@state_type("run_outlier_segment")
@dataclass(slots=True)
class OutlierState(SegmentState):
    """A segment's baseline and its current problem."""

    ring: Optional[SampleRing] = None
    hi: float = INF  # cached: values >= hi are outliers (up)
    lo: float = -INF  # cached: values <= lo are outliers (down)
    median_value: float = math.nan
    status: str = "ok"  # ok | pending | firing
    since: float = 0.0
    last_outlier: float = 0.0
    outliers: int = 0
    run_ids: list = field(default_factory=list)
    event_ids: list = field(default_factory=list)
    # The worst outlier so far: [run_id, event_id, value, steps, ratio, score, reason, threshold]
    worst: Optional[list] = None
    severity: Optional[str] = None
    # adaptive_repeats: runs started recently (a count decayed so that it approximates the runs of
    # the last repeats_memory_s) and when it was decayed; the most repetitive recent runs, at most
    # three: [repeats, crc32 of run_id, event time of the last repeat], largest first.
    runs_seen: float = 0.0
    runs_seen_t: float = 0.0
    top_repeats: Optional[list] = None
    top_streaks: Optional[list] = None  # the same for the highest rows of repeats (max_streak)
    repeats_basis: Optional[list] = None  # [2nd most repeats of other runs, limit] at the last flag


@register
class RunOutlier(Detector):
    """Per-run (or per-event) outliers against the segment's robust baseline.

    >>> p = RunOutlier.Params(name="run-tokens", type="run_outlier")
    >>> (p.per, p.field, p.z_threshold, p.min_ratio)
    ('run', 'total_tokens', 6.0, 10.0)
    """

    type_name = "run_outlier"
    # Robust z and the ratio to the median run.
    tuning_space = {"z_threshold": [4.0, 5.0, 6.0, 8.0], "min_ratio": Rel(0.5, 1.0, 2.0)}
    kind = "token_spike"
    Params = RunOutlierParams

    def __init__(self, params: RunOutlierParams, env):
        super().__init__(params, env)
        p = params
        self.kind = p.kind or default_kind(p.field)  # instance attribute: per configured field
        self._per_run = p.per == "run"
        self._steps_field = p.field == "steps"
        self._fieldname = p.field
        self._up = p.direction in ("up", "both")
        self._down = p.direction in ("down", "both")
        # Steps and repeated calls count even on events that do not carry the field.
        self._counts_without_value = self._per_run and (p.max_steps is not None
                                                        or p.max_repeated_calls is not None
                                                        or p.adaptive_repeats)
        self._counts_calls = p.max_repeated_calls is not None or p.adaptive_repeats
        # A count decayed with this half-life converges on the runs of the last repeats_memory_s.
        self._runs_half_life = p.repeats_memory_s * math.log(2.0)
        self._segment = segment_getter(p.group_by)
        self._value = value_getter(p.field)

    # -- state factories -------------------------------------------------------------------------
    def _new_segment(self) -> OutlierState:
        ring = SampleRing.empty(self.params.baseline_size) if self.params.adaptive else None
        return OutlierState(segment={}, ring=ring)

    @staticmethod
    def _new_run() -> RunState:
        return RunState(segment={})

    # -- per event -------------------------------------------------------------------------------
    def observe(self, event: RunEvent, ctx: Context) -> None:
        if self._steps_field:
            v: Optional[float] = 1.0
        else:
            v = self._value(event)
            if v is None and not self._counts_without_value:
                return
        seg = self._segment(event)
        if self._per_run:
            self._observe_run(event, seg, v, ctx)
            return
        st = ctx.state(self, seg, self._new_segment, event.ts)
        if st is not None:
            self._observe_event(event, st, v, ctx)

    def _observe_event(self, event: RunEvent, st: OutlierState, v: float, ctx: Context) -> None:
        p = self.params
        ts = event.ts
        outlier = (self._up and v >= st.hi) or (self._down and v <= st.lo)
        if not outlier and p.max_value is not None and v > p.max_value:
            self._flag(event, st, v, 1, "cap", ctx)
            return
        if outlier:
            self._flag(event, st, v, 1, "adaptive", ctx)
            return
        ring = st.ring
        if ring is not None:
            ring.add(math.log1p(v if v > 0 else 0.0), ts, p.sample_every_s)
            if ring.due(ts, p.refresh_s, p.refresh_min_new):
                self._refresh(st, ts, ts)

    def _observe_run(self, event: RunEvent, seg: dict, v: Optional[float], ctx: Context) -> None:
        p = self.params
        ts = event.ts
        # The segment's state (baseline, problem) is read per event only when there is a baseline;
        # with absolute caps alone it is needed only when a run is flagged.
        st = ctx.state(self, seg, self._new_segment, ts) if p.adaptive else None
        if p.adaptive and st is None:
            return
        run = ctx.state(self, {**seg, "run_id": event.run_id}, self._new_run, ts)
        if run is None:
            return
        ring = st.ring if st is not None else None
        if run.steps == 0:
            run.first_ts = ts
            if ring is not None:
                run.ticket = ring.claim(ts, p.sample_every_s)
            if p.adaptive_repeats:
                st = st or ctx.state(self, seg, self._new_segment, ts)
                if st is not None:
                    if ts > st.runs_seen_t:
                        st.runs_seen *= 0.5 ** ((ts - st.runs_seen_t) / self._runs_half_life)
                        st.runs_seen_t = ts
                    st.runs_seen += 1.0
        run.steps += 1
        if v is not None:
            run.total += v
            run.has_value = True
        if run.flagged:
            # A flagged run that keeps going keeps its segment's problem open (and may get worse).
            st = st or ctx.state(self, seg, self._new_segment, ts)
            if st is not None:
                self._still_outlying(st, event, run, ts)
            return
        repeats_before, streak_before = run.repeats, run.max_streak
        if self._counts_calls and event.tool_calls:
            self._count_calls(run, event)
        reason = None
        if p.max_steps is not None and run.steps > p.max_steps:
            reason = "steps"
        elif p.max_repeated_calls is not None and run.repeats > p.max_repeated_calls:
            reason = "repeats"
        elif p.adaptive_repeats and run.repeats > repeats_before:
            st = st or ctx.state(self, seg, self._new_segment, ts)
            if st is not None:
                if self._repetitive(st, "top_repeats", event.run_id, run.repeats, ts):
                    reason = "repeats_adaptive"
                elif run.max_streak > streak_before and \
                        self._repetitive(st, "top_streaks", event.run_id, run.max_streak, ts):
                    # Fewer repeats in all than the segment's busiest runs, but little new in
                    # between: a loop (normal runs re-check a thing or two, then move on).
                    reason = "streak_adaptive"
        elif p.max_value is not None and run.total > p.max_value:
            reason = "cap"
        elif st is not None and run.has_value and run.total >= st.hi and run.steps >= p.min_steps:
            reason = "adaptive"
        if reason is not None:
            run.flagged = True
            st = st or ctx.state(self, seg, self._new_segment, ts)
            if st is None:
                return
            if ring is not None:
                ring.forget(run.ticket)
            self._flag(event, st, run.total, run.steps, reason, ctx, run=run)
            return
        if ring is not None:
            if run.has_value and run.ticket >= 0:
                ring.write(run.ticket, math.log1p(run.total), ts)
            if ring.due(ts, p.refresh_s, p.refresh_min_new):
                self._refresh(st, ts, ts - p.run_gap_s)

    def _repetitive(self, st: OutlierState, memory: str, run_id: str, repeats: int, now: float) -> bool:
        """Judge a run whose repeats (``memory`` top_repeats) or highest leaky row of repeats
        (top_streaks: max_streak) just grew; unless flagged, remember it among the segment's three most
        repetitive recent runs on that measure (kept largest first)."""
        p = self.params
        me = zlib.crc32(run_id.encode())
        others = [e for e in getattr(st, memory) or () if e[1] != me and now - e[2] <= p.repeats_memory_s]
        if repeats >= p.min_repeats and st.runs_seen >= p.repeats_min_runs:
            second = float(others[1][0]) if len(others) > 1 else 0.0
            limit = max(float(p.min_repeats), p.repeats_ratio * second)
            if repeats >= limit:
                # Flagged: not learnt (don't learn from what you flagged); the basis goes on the record.
                st.repeats_basis = [second, limit]
                return True
        others.append([repeats, me, now])
        others.sort(key=lambda e: -e[0])
        setattr(st, memory, others[:3])
        return False

    @staticmethod
    def _count_calls(run: RunState, event: RunEvent) -> None:
        calls = run.calls
        if calls is None:
            calls = run.calls = {}
        for tc in event.tool_calls:
            key = zlib.crc32(f"{tc.name}\x1f{tc.arguments!r}".encode())
            n = calls.get(key)
            if n is None:
                if run.streak:
                    run.streak -= 1
                if len(calls) >= MAX_CALL_KEYS:
                    continue
                n = 0
            else:
                run.repeats += 1
                run.streak += 1
                if run.streak > run.max_streak:
                    run.max_streak = run.streak
            calls[key] = n + 1
            if n + 1 > run.top_calls:
                run.top_calls = n + 1
                run.top_tool = tc.name

    def _refresh(self, st: OutlierState, now: float, finished_before: float) -> None:
        p = self.params
        ring = st.ring
        n = ring.refresh(now, finished_before, p.min_log_scale)
        if n < p.min_samples:
            st.hi, st.lo, st.median_value = INF, -INF, math.nan
            return
        med, scale = ring.median, ring.scale
        st.median_value = math.expm1(med)
        st.hi = max(math.expm1(med + p.z_threshold * scale), p.min_ratio * st.median_value,
                    p.tail_ratio * math.expm1(ring.top), p.min_value, 1e-12)
        st.lo = min(math.expm1(med - p.z_threshold * scale), st.median_value / p.min_ratio)

    # -- the segment problem -----------------------------------------------------------------------
    def _measures(self, st: OutlierState, value: float, steps: int, reason: str,
                  run: Optional[RunState]) -> tuple[float, float, float, float]:
        """(ratio, score, baseline, threshold) of an outlier, for the record and the severity."""
        p = self.params
        if reason == "steps":
            return steps / p.max_steps, steps / p.max_steps, float(p.max_steps), float(p.max_steps)
        if reason == "repeats":
            r = run.repeats / p.max_repeated_calls
            return r, r, float(p.max_repeated_calls), float(p.max_repeated_calls)
        if reason in ("repeats_adaptive", "streak_adaptive"):
            second, limit = st.repeats_basis or (0.0, float(p.min_repeats))
            r = (run.repeats if reason == "repeats_adaptive" else run.max_streak) / limit
            return r, r, second, limit
        if reason == "cap":
            return value / p.max_value, value / p.max_value, p.max_value, p.max_value
        ring = st.ring
        med_v = st.median_value
        z = (math.log1p(max(value, 0.0)) - ring.median) / ring.scale
        if value >= med_v:
            return (value / med_v if med_v > 0 else INF), z, med_v, st.hi
        return (med_v / value if value > 0 else INF), z, med_v, st.lo

    def _flag(self, event: RunEvent, st: OutlierState, value: float, steps: int, reason: str,
              ctx: Context, run: Optional[RunState] = None) -> None:
        p = self.params
        ts = event.ts
        ratio, score, baseline, threshold = self._measures(st, value, steps, reason, run)
        if st.status == "ok":
            st.status, st.since, st.outliers = "pending", (run.first_ts if run else ts), 0
            st.run_ids, st.event_ids, st.worst, st.severity = [], [], None, None
        st.outliers += 1
        st.last_outlier = max(st.last_outlier, ts)
        if event.run_id not in st.run_ids and len(st.run_ids) < p.evidence_runs:
            st.run_ids.append(event.run_id)
        if len(st.event_ids) < 5:
            st.event_ids.append(event.event_id)
        if st.worst is None or ratio > st.worst[4]:
            st.worst = [event.run_id, event.event_id, value, steps, ratio, score, reason, threshold]
        st.active = True
        if st.status == "pending" and st.outliers >= p.min_outliers:
            st.status = "firing"
            st.severity = escalate(p.severity, ratio, p.escalate_ratio)
            ctx.emit(self.incident(
                action="trigger", segment=st.segment, ctx=ctx, severity=st.severity,
                summary=self._summary(st.segment, event, value, steps, reason, baseline, ratio, run),
                window_start=st.since, window_end=ts, detected_at=ts,
                observed=value, baseline=baseline, threshold=threshold, score=score,
                evidence=self._evidence(st, reason)))

    def _still_outlying(self, st: OutlierState, event: RunEvent, run: RunState, ts: float) -> None:
        if st.status == "ok":
            return  # the problem was resolved; this run's later steps do not reopen it alone
        st.last_outlier = max(st.last_outlier, ts)
        w = st.worst
        if w is not None and w[0] == event.run_id:
            # The worst run grows: keep its latest size for the resolve.
            w[2], w[3] = run.total, run.steps

    def advance(self, state: SegmentState, watermark: float, ctx: Context) -> None:
        st = state
        if not isinstance(st, OutlierState) or st.status == "ok":
            return
        if watermark - st.last_outlier < self.params.quiet_s:
            return
        if st.status == "firing":
            w = st.worst or [None, None, 0.0, 0, 0.0, 0.0, "", 0.0]
            f = self._fieldname
            if self._per_run:
                what, flagged = "runs", f"{st.outliers} run(s) flagged"
                size = f"{w[3]} steps" if self._steps_field else f"{amount(f, w[2])} in {w[3]} steps"
            else:
                what, flagged = "events", f"{st.outliers} event(s) flagged"
                size = amount(f, w[2])
            summary = (f"{segment_text(st.segment)}: resolved, no new outlying {what} for "
                       f"{duration(self.params.quiet_s)}; {flagged}, worst run {w[0]} ({size})")
            ctx.emit(self.incident(
                action="resolve", segment=st.segment, ctx=ctx, severity=st.severity,
                summary=summary, window_start=st.since, window_end=st.last_outlier,
                detected_at=watermark, observed=w[2], score=w[5],
                evidence=self._evidence(st, w[6])))
        st.status, st.active, st.outliers = "ok", False, 0
        ctx.changed(self, st)

    def _summary(self, seg: dict, event: RunEvent, value: float, steps: int, reason: str,
                 baseline: float, ratio: float, run: Optional[RunState]) -> str:
        p = self.params
        where = segment_text(seg)
        f = self._fieldname
        if not self._per_run:
            usual = "cap" if reason == "cap" else "segment median"
            return (f"{where}: event {event.event_id} of run {event.run_id} had {f} "
                    f"{amount(f, value)} ({usual} {amount(f, baseline)}, {ratio:.3g}×)")
        used = f"{steps} steps" if self._steps_field else f"{amount(f, value)} in {steps} steps"
        extra = "" if self._steps_field or not run or not run.has_value else \
            f", {amount(f, value)} so far"
        if reason == "steps":
            return (f"{where}: run {event.run_id} is looping: {steps} steps (limit {p.max_steps})"
                    f"{extra}")
        if reason == "repeats":
            return (f"{where}: run {event.run_id} is looping: {run.repeats} tool calls repeated "
                    f"an earlier call exactly (limit {p.max_repeated_calls}; {run.top_tool} "
                    f"{run.top_calls}× with the same arguments) in {steps} steps{extra}")
        if reason == "repeats_adaptive":
            return (f"{where}: run {event.run_id} is looping: {run.repeats} tool calls repeated "
                    f"an earlier call exactly ({run.top_tool} {run.top_calls}× with the same "
                    f"arguments) in {steps} steps; the segment's 2nd most repetitive recent run "
                    f"repeated {baseline:.0f} (limit: at least {p.min_repeats} and "
                    f"{p.repeats_ratio:g}× that){extra}")
        if reason == "streak_adaptive":
            return (f"{where}: run {event.run_id} is looping: a stretch of its tool calls repeated "
                    f"earlier calls exactly {run.max_streak} times more than it made new ones "
                    f"({run.top_tool} {run.top_calls}× with the same arguments) in {steps} steps; "
                    f"the segment's 2nd highest such stretch among other recent runs was "
                    f"{baseline:.0f} (limit: at least {p.min_repeats} and {p.repeats_ratio:g}× "
                    f"that){extra}")
        if reason == "cap":
            return f"{where}: run {event.run_id} used {used} (limit {amount(f, p.max_value)})"
        return (f"{where}: run {event.run_id} used {used} "
                f"(segment median run {amount(f, baseline)}, {ratio:.3g}×)")

    def _evidence(self, st: OutlierState, reason: str) -> dict[str, Any]:
        w = st.worst
        ev: dict[str, Any] = {"run_ids": list(st.run_ids), "event_ids": list(st.event_ids),
                              "outliers": st.outliers, "field": self._fieldname,
                              "per": self.params.per, "reason": reason}
        if w is not None:
            ev["worst"] = {"run_id": w[0], "event_id": w[1], "value": w[2], "steps": w[3],
                           "ratio": finite_or_none(w[4])}
        if st.ring is not None and st.median_value == st.median_value:
            ev["baseline_median"] = st.median_value
            ev["baseline_samples"] = st.ring.count
        return ev

    def probe(self, segment: dict[str, str], window: dict) -> SignalProbe:
        run_id = window.get("run_id")
        if not run_id:
            raise ProbeUnavailable("the label names no run_id")
        p = self.params

        def read(engine, event) -> Optional[Point]:
            if event.run_id != run_id:
                return None
            run = engine.get(self, {**segment, "run_id": run_id})
            if run is None:
                return None
            return self._probe_point(engine, segment, event, run)

        signal = (f"{p.field} of the labelled run (cumulative)" if p.per == "run"
                  else f"{p.field} per event")
        return SignalProbe(signal, read, "outlier line (once the baseline has min_samples)")

    def _probe_point(self, engine, segment: dict[str, str], event: RunEvent, run: "RunState") -> Point:
        p = self.params
        st = engine.get(self, segment)
        hi = st.hi if st is not None and math.isfinite(st.hi) else (p.max_value or None)
        base = st.median_value if st is not None and st.median_value == st.median_value else None
        return (event.ts, run.total, base, hi, None)

    # -- contract test hooks -----------------------------------------------------------------------
    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"name": "run-tokens-test", "type": cls.type_name, "min_samples": 20,
                "sample_every_s": 0, "run_gap_s": 30}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        normal = []
        t0 = 1_767_600_000.0
        for r in range(120):  # 120 runs of 3 steps, ~3k tokens each
            for s in range(3):
                normal.append(unit_event(f"n{r}-{s}", f"r{r}", t0 + r * 20 + s * 2,
                                  input_tokens=600 + (r * 37) % 300, output_tokens=300 + (r * 53) % 200))
        t1 = t0 + 120 * 20 + 60
        anomalous = [unit_event(f"a-{s}", "r-loop", t1 + s * 2, input_tokens=20000 + 2000 * s,
                         output_tokens=1500) for s in range(40)]
        return normal, anomalous
