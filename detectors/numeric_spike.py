"""Token and cost spikes: per-run outliers, runaway loops and aggregate burn rates.

Three detector types, all pointed by config at any numeric field (``total_tokens``,
``output_tokens``, ``cost_usd``, ``latency_s``, ``metrics.x``, ``feedback.x``):

``run_outlier``
    A run (cumulative, ``per: run``) or a single event (``per: event``) far from its segment's robust
    baseline: the median and MAD, on a log scale, of recent runs' totals (or events' values) — see
    :class:`detectors.robust_baseline.SampleRing`. It fires when the robust z reaches
    ``z_threshold`` *and* the value is ``min_ratio`` times the median *and* ``tail_ratio`` times the
    recent tail (the 2nd largest sample; token counts are heavier-tailed than log-normal) *and* at
    least ``min_value``; per run only from ``min_steps`` steps on (one call cannot run away).
    The score comes first, then learning; flagged runs are withdrawn from the baseline. Optional
    absolute caps ``max_steps`` / ``max_repeated_calls`` / ``max_value`` flag a run whatever the
    baseline says.
    One incident per segment problem: several outlying runs in one segment are one trigger whose
    evidence lists their run ids; it resolves after ``quiet_s`` without a new outlier (and without
    a new step of an outlying run, so a loop that keeps burning keeps it open).

``runaway_loop``
    The same machinery with absolute caps: more than ``max_steps`` steps, more than
    ``max_repeated_calls`` exact repeats of the run's own earlier tool calls (name + arguments), or
    more than ``max_value`` tokens in one run — a loop, however the baseline looks. And, relative to
    the segment (``adaptive_repeats``): at least ``min_repeats`` exact repeats and ``repeats_ratio``
    times the second most repetitive other run of the segment's recent runs. Where runs normally
    never repeat a call (an order agent), five repeats are a loop within seconds; where they do (a
    research agent re-running searches), the absolute cap decides.

``rate_spike``
    Aggregate burn per segment: the field summed per event-time bucket (tokens/min, $/min, events/min
    with ``field: count``) or its per-event mean (``aggregate: mean`` — $/event, which does not move
    with load; ``geomean``, the geometric mean of the positive values, is the typical event's value:
    one long, expensive agent run moves it little, a switch to a pricier model moves it all the
    way), over a recent window, against a baseline that respects the time of day
    (:class:`detectors.robust_baseline.DailyBaseline`). A breach needs the ratio to the usual value,
    an absolute change and a z-like score vs the slot's learned variability, for ``for_s``; it
    clears below ``clear_ratio`` for ``clear_for_s``. The baseline does not learn while pending or
    firing.

Per-run state lives under the segment plus ``run_id`` (a separate small state per run, expired by
the engine after ``idle_ttl_s`` without events and capped by ``max_segments``), so the changelog
only carries what a batch touched.
"""

from __future__ import annotations

import math
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from detectors.base import Context, Detector, DetectorParams, SegmentState, register
from detectors.lifecycle import Lifecycle, LifecyclePolicy
from detectors.robust_baseline import DailyBaseline, SampleRing, ewma_alpha
from semwatch.models import RunEvent

TOKEN_FIELDS = ("total_tokens", "input_tokens", "output_tokens")
KindName = Literal["token_spike", "cost_spike", "threshold"]
Direction = Literal["up", "down", "both"]
_SEVERITIES = ("SEV-3", "SEV-2", "SEV-1")
INF = math.inf
MAX_CALL_KEYS = 64  # distinct tool calls remembered per run (max_repeated_calls); later new ignored


# Top-level string fields of RunEvent: a segment of these is read with getattr (the fast path).
_STR_FIELDS = frozenset(("app", "route", "model", "provider", "prompt_version", "tenant",
                         "conversation_id", "run_id", "finish_reason", "error_type"))


def segment_getter(group_by: tuple[str, ...]):
    """A function event -> segment dict for ``group_by`` (missing labels are "")."""
    fields = tuple(group_by)
    if all(f in _STR_FIELDS for f in fields):
        return lambda event: {f: getattr(event, f) or "" for f in fields}
    return lambda event: {f: (event.segment_value(f) or "") for f in fields}


_NUM_FIELDS = frozenset(("input_tokens", "output_tokens", "cost_usd", "latency_s"))


def _total_tokens(event: RunEvent) -> Optional[float]:
    i, o = event.input_tokens, event.output_tokens
    if i is None and o is None:
        return None
    return float((i or 0) + (o or 0))


def value_getter(field_name: str):
    """A function event -> float or None for ``field_name`` (RunEvent.numeric, with fast paths)."""
    if field_name == "total_tokens":
        return _total_tokens
    if field_name in _NUM_FIELDS:  # validated numbers (finite, >= 0) or None
        return lambda event: getattr(event, field_name)
    return lambda event: event.numeric(field_name)


def default_kind(field_name: str) -> str:
    """token_spike for token fields and steps, cost_spike for cost_usd, threshold otherwise."""
    if field_name in TOKEN_FIELDS or field_name == "steps":
        return "token_spike"
    if field_name == "cost_usd":
        return "cost_spike"
    return "threshold"


def escalate(base: str, magnitude: float, steps: tuple[float, ...]) -> str:
    """``base`` raised one level for every step of ``steps`` that ``magnitude`` reaches."""
    level = _SEVERITIES.index(base) + sum(1 for s in steps if magnitude >= s)
    return _SEVERITIES[min(level, len(_SEVERITIES) - 1)]


# -- formatting for a paged human ----------------------------------------------------------------
def _num(x: float) -> str:
    ax = abs(x)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if ax >= div:
            return f"{x / div:.3g}{suffix}"
    if ax >= 100 or x == int(x):
        return f"{x:.0f}"
    return f"{x:.3g}"


def amount(field_name: str, x: float) -> str:
    """``1.2M tokens``, ``$0.042``, ``3.1 s``, ``0.12 metrics.score``."""
    if field_name in TOKEN_FIELDS:
        return f"{_num(x)} tokens"
    if field_name == "cost_usd":
        return f"${x:.2f}" if abs(x) >= 1 else f"${x:.2g}"
    if field_name == "steps":
        return f"{_num(x)} steps"
    if field_name == "count":
        return f"{_num(x)} events"
    if field_name.endswith("_s"):
        return f"{x:.3g} s"
    return f"{x:.3g} {field_name}"


def segment_text(segment: dict[str, str]) -> str:
    return "/".join(v for v in segment.values() if v) or "(all)"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ================================================================================================
# run_outlier / runaway_loop
# ================================================================================================
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
                           "ratio": _finite_or_none(w[4])}
        if st.ring is not None and st.median_value == st.median_value:
            ev["baseline_median"] = st.median_value
            ev["baseline_samples"] = st.ring.count
        return ev

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
                normal.append(_ev(f"n{r}-{s}", f"r{r}", t0 + r * 20 + s * 2,
                                  input_tokens=600 + (r * 37) % 300, output_tokens=300 + (r * 53) % 200))
        t1 = t0 + 120 * 20 + 60
        anomalous = [_ev(f"a-{s}", "r-loop", t1 + s * 2, input_tokens=20000 + 2000 * s,
                         output_tokens=1500) for s in range(40)]
        return normal, anomalous


class RunawayLoopParams(RunOutlierParams):
    type: str = "runaway_loop"
    severity: str = Field(default="SEV-2", pattern=r"^SEV-[123]$")
    per: Literal["run", "event"] = "run"
    adaptive: bool = False  # absolute caps only; set true to add the adaptive check as well
    max_steps: Optional[int] = Field(default=50, ge=1)  # more steps (events) than this is a loop
    max_value: Optional[float] = Field(default=None, gt=0)  # e.g. 5000000 tokens in one run
    max_repeated_calls: Optional[int] = Field(default=24, ge=1)  # exact repeats of earlier calls
    adaptive_repeats: bool = True  # and repeats far above the segment's other runs
    escalate_ratio: tuple[float, ...] = (4.0,)  # SEV-1 at 4 × the cap


@register
class RunawayLoop(RunOutlier):
    """A run with more than ``max_steps`` steps, more than ``max_repeated_calls`` exact repeats of
    its own earlier tool calls, cumulative ``field`` above ``max_value``, or (``adaptive_repeats``)
    far more exact repeats than the segment's other recent runs, in all or net of new calls.

    >>> RunawayLoop.Params(name="runaway-loop", type="runaway_loop").max_steps
    50
    """

    type_name = "runaway_loop"
    kind = "token_spike"
    Params = RunawayLoopParams

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"name": "runaway-test", "type": cls.type_name, "max_steps": 20}


# ================================================================================================
# rate_spike
# ================================================================================================
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
    # Severity goes one level up for each step of the ratio ...
    escalate_ratio: tuple[float, ...] = (10.0, 50.0)
    # ... or of the absolute change (field units per minute or per event); empty = off.
    escalate_increase: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> "RateSpikeParams":
        if self.window_s < self.bucket_s:
            raise ValueError("window_s must be at least bucket_s")
        if self.field == "count" and self.aggregate in ("mean", "geomean"):
            raise ValueError(f"field: count with aggregate: {self.aggregate} is always 1; "
                             "use aggregate: sum")
        if self.clear_ratio > self.min_ratio:
            raise ValueError("clear_ratio must not exceed min_ratio (hysteresis)")
        return self


@dataclass(slots=True)
class RateState(SegmentState):
    bucket: int = -1  # index (ts // bucket_s) of the open bucket
    b_sum: float = 0.0
    b_n: int = 0
    b_top: float = -INF
    b_top_ids: Optional[tuple] = None  # (run_id, event_id) of the bucket's largest value
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


@register
class RateSpike(Detector):
    """Aggregate burn per segment vs a time-of-day baseline.

    >>> RateSpike.Params(name="cost-per-route", type="rate_spike", field="cost_usd",
    ...                  aggregate="mean").aggregate
    'mean'
    """

    type_name = "rate_spike"
    kind = "token_spike"
    Params = RateSpikeParams

    def __init__(self, params: RateSpikeParams, env):
        super().__init__(params, env)
        p = params
        self.kind = p.kind or default_kind(p.field)
        self._count = p.field == "count"
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
        if self._count:
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
        breached = False
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
            if self._up and up_ratio >= p.min_ratio and z >= p.z_threshold \
                    and x - expected >= p.min_increase:
                breached = True
            if self._down and up_ratio * p.min_ratio <= 1.0 and z <= -p.z_threshold \
                    and expected - x >= p.min_increase:
                breached = True
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
        if lc.status == "ok" and not breached and y == y and volume >= p.min_volume:
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
                "output_tokens": "output token burn", "count": "event rate"}.get(f, f"{f} per minute")

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
                           key=_SEVERITIES.index)
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

    # -- contract test hooks -----------------------------------------------------------------------
    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"name": "cost-per-route-test", "type": cls.type_name, "field": "cost_usd",
                "aggregate": "mean", "group_by": ["app", "route"], "warmup_s": 600,
                "min_volume": 5}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        t0 = 1_767_600_000.0
        normal = [_ev(f"n{i}", f"r{i}", t0 + i * 5, input_tokens=800 + (i * 37) % 400,
                      output_tokens=200 + (i * 11) % 100, cost_usd=0.001 + (i % 7) * 0.0001)
                  for i in range(720)]  # 1 h, one event every 5 s
        t1 = t0 + 720 * 5
        anomalous = [_ev(f"a{i}", f"ra{i}", t1 + i * 5, input_tokens=800, output_tokens=200,
                         cost_usd=0.02) for i in range(60)]
        return normal, anomalous


def _ev(event_id: str, run_id: str, ts: float, **kw: Any) -> dict:
    return {"schema_version": "1", "event_id": event_id, "run_id": run_id, "ts": ts,
            "app": "unit-app", "route": "unit-route", "model": "unit-model", **kw}


def _finite_or_none(x: float) -> Optional[float]:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
