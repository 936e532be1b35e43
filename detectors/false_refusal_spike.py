"""False-refusal spike: the share of ordinary requests that a segment refuses rises, significantly
and materially, above what that segment (or, for a new segment, its route) normally refuses.

Per segment (default ``app, route, model, prompt_version``) the detector counts, in event-time
buckets, requests that were *not* flagged harmful upstream (``request_flagged`` true is excluded, a
refusal of a harmful request is not false) and that carry a refusal verdict (``refusal`` None is
excluded), and how many of them were refused.

Each time a segment's event time enters a new bucket, the recent sub-windows (the last
``short_window_s``, one bucket longer, ... up to ``window_s``) are tested against the baseline rate
``p0``, and the most significant one that passes all of these is a breach — a sharp onset shows in a
short sub-window before it moves a long one, a spike in a quiet segment only in the long one:

- volume: at least ``min_volume`` requests and ``min_refused`` refusals in the sub-window, the
  refusals from at least ``min_conversations`` distinct conversations (``conversation_id``, else
  ``run_id``): one user rephrasing a borderline request five times is not a regression;
- significant: one-sided exact binomial test, P(X >= k | n, p0) < ``alpha`` (counts are divided by
  the segment's measured over-dispersion, at most ``max_dispersion``, so bursty traffic does not
  look more certain than it is);
- material: ``rate - p0 >= min_increase`` and ``rate >= min_ratio * p0``.

A refusal is also judged the moment it arrives, over the window ending then (a rise can only
begin with one), and a pending breach on every request and engine tick (``ctx.now``, the newest
event time): the sustain is ``for_s`` of event time even in a segment that has gone quiet, not
"until the lagging watermark or the segment's next request comes by". Buckets are learnt, and the
clear is judged, at bucket boundaries only; the lifecycle never steps back in event time.

A second, sequential test judges everything since a rise began, for segments too quiet for any
window (a request a minute): per request, two CUSUMs add the log-likelihood ratio of "refused at a
material rate" (the line ``max(p0 + min_increase, min_ratio * p0)``, and three times as far above
``p0``) against "refused at ``p0``", divided by the over-dispersion, never below zero. Either one
reaching ``h`` is a breach (with ``min_refused`` refusals from ``min_conversations`` conversations
since the rise began, at a material rate), and triggers at once: accumulated evidence is its own
sustain. ``h = max(ln(1/alpha), ln(requests per day x sequential_false_alarm_days)) + ln 2``: by
Lorden's bound a CUSUM's mean run between false alarms is at least ``e^h`` requests, so one segment
false-alarms less than once in ``sequential_false_alarm_days`` at its own traffic (measured ~20x
less often), and quiet segments need less evidence than busy ones. While its evidence is above zero,
buckets leaving the window are not learnt yet: they are learnt once it falls back to zero and
dropped if it triggers, so a bad prompt version does not become its own baseline while it slowly
accumulates evidence. The window test keeps its speed on busy segments.

A breach held for ``for_s`` triggers (``semwatch.engine.lifecycle``); the incident resolves once the rate
over the whole window stays at or below ``p0 + clear_increase`` for ``clear_for_s`` (hysteresis), or
when the segment gets no traffic for ``idle_resolve_s``, or ten of its mean gaps between requests
since the rise began if that is longer (a route at a request a minute often goes five minutes without
one; ten mean gaps of Poisson traffic pass unbroken with probability e^-10) (e.g. the bad prompt version was rolled
back). Trigger and resolve share one ``dedup_key`` and severity: SEV-1 for a high rate at high
volume, SEV-3 for a small rise or little traffic, else ``severity``.

Baseline: decayed refusal counts (half-life ``baseline_half_life_s``) learnt only from buckets that
left the window without ever being part of a breach or an open incident (score first, then learn;
don't learn from what you flagged). The segment's own counts are shrunk towards its parent scopes
(``baseline_scopes``: the same route across prompt versions, then across models), and the coarsest
towards ``prior_rate``. A prompt version that has just rolled out has no history of its own, so it is
compared with its route's — exactly the case this detector exists for. Until the whole hierarchy has
seen ``min_baseline_n`` requests the detector only learns.

Buckets close ``grace_s`` after their end (segment event time) or when the engine's watermark passes
them; events for a closed bucket, and events the engine marks late, are counted on the state
(``late``) and not windowed.

>>> round(binom_logsf(8, 20, 0.03) / math.log(10), 2)  # log10 P(X >= 8 | n=20, p=3%)
-7.22
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import Field, model_validator

from semwatch.contract import RunEvent
from semwatch.contract.redact import redact
from semwatch.engine.detector import Context, Detector, DetectorParams, Evidence, SegmentState, register
from semwatch.engine.formatting import duration
from semwatch.engine.lifecycle import Lifecycle, LifecyclePolicy
from semwatch.engine.state import state_type
from semwatch.engine.tuning import Point, SignalProbe

# Bucket row layout (plain lists keep the state record small). _WHO: crc32 of the conversations
# (else runs) of its refusals, at most min_conversations of them: enough to tell whether a window
# reaches min_conversations (a bucket that holds that many passes alone; otherwise it holds all).
_START, _N, _K, _FLAGGED, _TAINTED, _WHO = range(6)
# Marks a baseline-scope key in the state store; no real label value starts with NUL.
SCOPE_FIELD = "~baseline"
SCORE_CAP = 300.0


# -- statistics ---------------------------------------------------------------------------------
def _logpmf(j: int, n: int, lp: float, lq: float, lgn1: float) -> float:
    return lgn1 - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq


def binom_logsf(k: int, n: int, p: float) -> float:
    """Natural log of P(X >= k) for X ~ Binomial(n, p), exact and underflow-free."""
    if k <= 0:
        return 0.0
    if k > n or p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    lp, lq, lgn1 = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    if k > n * p:
        # Upper tail: terms fall from j=k on; sum them in log space until they stop mattering.
        first = _logpmf(k, n, lp, lq, lgn1)
        total, term, ratio_pq = 1.0, 1.0, p / (1.0 - p)
        for j in range(k, n):
            term *= (n - j) / (j + 1) * ratio_pq
            total += term
            if term < total * 1e-17:
                break
        return first + math.log(total)
    # k at or below the mean: 1 - P(X <= k-1), summing the lower tail downwards.
    last = _logpmf(k - 1, n, lp, lq, lgn1)
    total, term, ratio_qp = 1.0, 1.0, (1.0 - p) / p
    for j in range(k - 1, 0, -1):
        term *= j / (n - j + 1) * ratio_qp
        total += term
        if term < total * 1e-17:
            break
    lower = math.exp(last) * total
    return math.log(max(1.0 - lower, 1e-300))


# -- parameters ---------------------------------------------------------------------------------
class RefusalSpikeParams(DetectorParams):
    type: str = "false_refusal_spike"
    # Event-time bucket width; the window is evaluated each time a segment enters a new bucket.
    bucket_s: float = Field(default=15.0, gt=0, le=600)
    # Sliding evaluation window (refusals and requests summed over its buckets).
    window_s: float = Field(default=180.0, gt=0, le=3600)
    # Shortest recent sub-window tested for a breach (sub-windows grow bucket by bucket to window_s).
    short_window_s: float = Field(default=30.0, gt=0)
    # A bucket closes this long after its end (segment event time); keep = engine.allowed_lateness_s.
    grace_s: float = Field(default=30.0, ge=0)
    # Fewest ordinary requests in the window before a verdict is possible.
    min_volume: int = Field(default=5, ge=1)
    # Fewest refused requests in the window: two refusals against a near-zero baseline are no spike.
    min_refused: int = Field(default=4, ge=1)
    # ... from at least this many distinct conversations (conversation_id, else run_id).
    min_conversations: int = Field(default=3, ge=1, le=64)
    # One-sided binomial p-value below which the rise is significant.
    alpha: float = Field(default=1e-5, gt=0, lt=0.5)
    # Material: the window rate must exceed the baseline by this much (absolute) ...
    min_increase: float = Field(default=0.10, gt=0, lt=1)
    # ... and be at least this multiple of the baseline.
    min_ratio: float = Field(default=2.0, ge=1)
    # Hysteresis: cleared while rate <= baseline + clear_increase.
    clear_increase: float = Field(default=0.05, ge=0, lt=1)
    # Sustain: breach held this long (event time) before the trigger.
    for_s: float = Field(default=30.0, ge=0)
    # Clear held this long before the resolve.
    clear_for_s: float = Field(default=120.0, ge=0)
    # Resolve (or drop a pending breach) when the segment gets no traffic for this long.
    idle_resolve_s: float = Field(default=300.0, gt=0)
    # Global prior refusal rate for scopes with no history, and its weight in pseudo-requests.
    prior_rate: float = Field(default=0.03, gt=0, lt=1)
    prior_strength: float = Field(default=50.0, gt=0)
    # Weight (pseudo-requests) of the parent scope's rate in a segment's baseline.
    parent_strength: float = Field(default=100.0, gt=0)
    # Learn-only until the baseline hierarchy has seen this many (decayed) requests.
    min_baseline_n: float = Field(default=200.0, ge=0)
    # Baseline memory: learnt counts halve every this many seconds of event time.
    baseline_half_life_s: float = Field(default=6 * 3600.0, gt=0)
    # Parent scopes for the baseline, finest first: the group_by labels each one leaves out.
    baseline_scopes: tuple[tuple[str, ...], ...] = (("prompt_version",), ("prompt_version", "model"))
    # Over-dispersion (measured on clean, learnt windows) divides the counts, capped here; 1 disables.
    max_dispersion: float = Field(default=3.0, ge=1)
    # Memory of the over-dispersion estimate, in learnt windows (100 x 3 min = 5 h).
    dispersion_memory: float = Field(default=100.0, ge=1)
    # Severity: SEV-1 when rate >= sev1_min_rate with traffic >= sev1_min_requests per window_s ...
    sev1_min_rate: float = Field(default=0.5, gt=0, le=1)
    sev1_min_requests: int = Field(default=100, ge=1)
    # ... SEV-3 when the increase is below sev3_max_increase or fewer than sev3_max_requests;
    # otherwise `severity` (SEV-2 by default).
    sev3_max_increase: float = Field(default=0.2, ge=0, le=1)
    sev3_max_requests: int = Field(default=40, ge=0)
    # Sequential test since the onset (see the module docstring); false disables it.
    sequential: bool = True
    # Its false-alarm budget: one segment false-alarms less than once in this many days at its own
    # traffic (a conservative bound). Raising it: fewer, later pages on quiet segments.
    sequential_false_alarm_days: float = Field(default=90.0, gt=0)
    # Deferred (not yet learnt) buckets kept per segment while its sequential evidence is up.
    max_deferred: int = Field(default=240, ge=0, le=2000)
    # Refused samples (ids and redacted excerpts) kept as evidence.
    evidence_samples: int = Field(default=5, ge=0, le=20)

    @model_validator(mode="after")
    def _consistent(self) -> "RefusalSpikeParams":
        if self.window_s < self.bucket_s:
            raise ValueError("window_s must be at least bucket_s")
        if not self.bucket_s <= self.short_window_s <= self.window_s:
            raise ValueError("short_window_s must lie between bucket_s and window_s")
        if self.window_s / self.bucket_s > 240:
            raise ValueError("window_s / bucket_s must be at most 240 (bounded state)")
        if self.grace_s >= self.window_s:
            raise ValueError("grace_s must be shorter than window_s")
        if self.clear_increase > self.min_increase:
            raise ValueError("clear_increase must not exceed min_increase (hysteresis)")
        if self.min_conversations > self.min_refused:
            raise ValueError("min_conversations must not exceed min_refused")
        return self


# -- state --------------------------------------------------------------------------------------
@state_type("refusal_baseline")
@dataclass(slots=True)
class BaselineCounts(SegmentState):
    """Decayed refusal counts of one baseline scope (also embedded in every segment)."""

    base_n: float = 0.0
    base_k: float = 0.0
    base_t: float = 0.0

    def learn(self, n: int, k: int, now: float, half_life: float) -> None:
        if self.base_n > 0 and now > self.base_t:
            decay = 0.5 ** ((now - self.base_t) / half_life)
            self.base_n *= decay
            self.base_k *= decay
        self.base_t = max(self.base_t, now)
        self.base_n += n
        self.base_k += k


@state_type("refusal_spike_segment")
@dataclass(slots=True)
class RefusalSpikeState(BaselineCounts):
    # [start, n, refused, flagged, tainted] per non-empty bucket, oldest first, within the window.
    buckets: list = field(default_factory=list)
    max_ts: float = -math.inf
    evaluated_until: float = -math.inf  # last bucket boundary the window was evaluated at
    closed_until: float = -math.inf  # events before this are late
    late: int = 0
    lc: Lifecycle = field(default_factory=Lifecycle)
    judged_at: float = -math.inf  # event time of the lifecycle's latest step (never goes back)
    breach_start: float = 0.0  # start of the sub-window that first breached
    samples: list = field(default_factory=list)  # [run_id, event_id, excerpt], newest last
    # The last evaluation: [n, k, rate, p0, window_start, at]
    last_eval: list = field(default_factory=list)
    # EWMA of the Pearson statistic of clean, learnt windows (over-dispersion) and its weight so
    # far; the block of clean buckets being gathered into the next such window: [start, n, k].
    disp: float = 1.0
    disp_w: float = 0.0
    block: list = field(default_factory=list)
    # Sequential test: [S for the material line, S for three times as far, requests and refusals
    # since the onset, onset time, conversation hashes of those refusals (at most
    # min_conversations)]; its reference [p0, dispersion, h, and the four log-ratios] is refreshed
    # at bucket boundaries, when the baseline can change.
    seq: list = field(default_factory=lambda: [0.0, 0.0, 0, 0, 0.0, []])
    seq_ref: list = field(default_factory=list)
    # Buckets that left the window while the sequential evidence was above zero: [start, n, k].
    deferred: list = field(default_factory=list)


@dataclass
class _Verdict:
    at: float
    window_start: float
    n: int
    k: int
    flagged: int
    rate: float
    p0: float
    baseline_from: str
    history_n: float
    dispersion: float
    breached: bool
    cleared: bool
    # The most significant recent sub-window that is large and material enough (best_n 0: none).
    best_n: int = 0
    best_k: int = 0
    best_rate: float = 0.0
    best_start: float = 0.0
    log_p: float = 0.0  # natural log of its p-value (0 when not computed)
    # The sequential test: breached (then best_* describe everything since the onset), its
    # log-likelihood ratio and threshold.
    seq_breached: bool = False
    decided_by: str = "window"
    seq_llr: float = 0.0
    seq_h: float = 0.0


# -- the detector -------------------------------------------------------------------------------
@register
class RefusalSpikeDetector(Detector):
    """Refusal rate of ordinary requests per segment vs an online, protected, hierarchical baseline."""

    type_name = "false_refusal_spike"
    # Significance and sustain: alpha trades false alarms for sensitivity, for_s for earliness.
    tuning_space = {"alpha": [1e-3, 1e-4, 1e-5, 1e-6], "for_s": [15.0, 45.0, 90.0]}
    kind = "false_refusal_spike"
    Params = RefusalSpikeParams

    def __init__(self, params: RefusalSpikeParams, env):
        super().__init__(params, env)
        p = params
        self.policy = LifecyclePolicy(for_s=p.for_s, clear_for_s=p.clear_for_s)
        # Parent scopes as field lists, finest first, without duplicates or no-ops.
        self._scopes: list[tuple[str, ...]] = []
        for drop in p.baseline_scopes:
            fields = tuple(f for f in p.group_by if f not in drop)
            if fields != tuple(p.group_by) and fields not in self._scopes:
                self._scopes.append(fields)

    # -- event path ----------------------------------------------------------------------------
    def observe(self, event: RunEvent, ctx: Context) -> None:
        flagged = bool(event.request_flagged)
        if event.refusal is None and not flagged:
            return  # no verdict on this request: nothing to count
        p = self.params
        st = ctx.state(self, self.segment_of(event), self._new_state, event.ts)
        if st is None:
            return
        ts = event.ts
        start = math.floor(ts / p.bucket_s) * p.bucket_s
        if ctx.late or start < st.closed_until:
            st.late += 1  # ctx.state already marked the state as changed
            return
        if ts > st.max_ts:
            st.max_ts = ts
            closed = math.floor((ts - p.grace_s) / p.bucket_s) * p.bucket_s
            st.closed_until = max(st.closed_until, closed)
            boundary = start
            if st.evaluated_until == -math.inf:
                st.evaluated_until = boundary
            elif boundary > st.evaluated_until:
                self._evaluate_through(st, boundary, ts, ctx)
        row = self._bucket(st, start)
        if flagged:
            row[_FLAGGED] += 1
        else:
            row[_N] += 1
            if p.sequential:
                self._sequential_update(st, bool(event.refusal), event, ctx)
            if event.refusal:
                row[_K] += 1
                who = row[_WHO]
                if len(who) < p.min_conversations:
                    h = zlib.crc32((event.conversation_id or event.run_id).encode())
                    if h not in who:
                        who.append(h)
                if p.evidence_samples:
                    st.samples.append([event.run_id, event.event_id,
                                       redact(event.response_text, 120) if event.response_text else ""])
                    del st.samples[:-p.evidence_samples]
            # A rise can only begin with a refusal: judge it now, not at the bucket's end (and the
            # next event of a quiet segment); a pending breach is re-judged on every request.
            if event.refusal or st.lc.status == "pending":
                self._judge_now(st, ts, ctx)
        st.active = st.lc.active

    def advance(self, state: SegmentState, watermark: float, ctx: Context) -> None:
        st = state
        if not isinstance(st, RefusalSpikeState):
            return
        p = self.params
        boundary = math.floor(watermark / p.bucket_s) * p.bucket_s
        st.closed_until = max(st.closed_until, boundary)
        if boundary > st.evaluated_until > -math.inf:
            self._evaluate_through(st, boundary, max(watermark, st.max_ts), ctx)
        if st.lc.status == "pending" and ctx.now > st.judged_at:
            # The sustain is event time: a quiet segment's breach is held (no request has diluted
            # it) once for_s has passed, not once the lagging watermark has come by.
            self._judge_now(st, ctx.now, ctx)
        if st.lc.active and watermark - st.max_ts >= self._idle_after(st):
            if st.lc.status == "firing":
                self._emit_resolve(st, max(watermark, st.max_ts), ctx, idle=True,
                                   verdict=None)
            st.lc = Lifecycle()
        st.active = st.lc.active
        ctx.changed(self, st)

    def _idle_after(self, st: RefusalSpikeState) -> float:
        """Silence that counts as "no traffic": idle_resolve_s, or ten mean gaps since the onset."""
        n, onset = st.seq[2], st.seq[4]
        if n >= 2 and st.max_ts > onset:
            return max(self.params.idle_resolve_s, 10.0 * (st.max_ts - onset) / (n - 1))
        return self.params.idle_resolve_s

    # -- windows -------------------------------------------------------------------------------
    @staticmethod
    def _new_state() -> RefusalSpikeState:
        return RefusalSpikeState(segment={})

    def _bucket(self, st: RefusalSpikeState, start: float) -> list:
        for row in reversed(st.buckets):  # nearly always the last one
            if row[_START] == start:
                if len(row) == _WHO:  # a row from a changelog written before _WHO existed
                    row.append([])
                return row
            if row[_START] < start:
                break
        row = [start, 0, 0, 0, False, []]
        st.buckets.append(row)
        st.buckets.sort(key=lambda r: r[_START])
        return row

    def _evaluate_through(self, st: RefusalSpikeState, boundary: float, now: float,
                          ctx: Context) -> None:
        """Evaluate the window at every bucket boundary that matters in (evaluated_until, boundary]."""
        p = self.params
        ends = sorted({row[_START] + p.bucket_s for row in st.buckets
                       if st.evaluated_until < row[_START] + p.bucket_s < boundary})
        for at in ends[-4:] + [boundary]:
            self._evaluate_at(st, at, now, ctx)
        st.evaluated_until = boundary

    def _evaluate_at(self, st: RefusalSpikeState, at: float, now: float, ctx: Context) -> None:
        p = self.params
        lo = at - p.window_s
        baseline = self._baseline(st, ctx)  # score first, then learn
        # Buckets leaving the window teach the baseline unless they were part of a breach; while
        # the sequential evidence is up they wait (learnt if it falls back, dropped if it triggers).
        evidence_up = p.sequential and (st.seq[0] > 0.0 or st.seq[1] > 0.0)
        while st.buckets and st.buckets[0][_START] < lo:
            row = st.buckets.pop(0)
            if row[_TAINTED]:
                st.block = []
            elif row[_N] > 0:
                if evidence_up and p.max_deferred:
                    st.deferred.append([row[_START], row[_N], row[_K]])
                    if len(st.deferred) > p.max_deferred:
                        self._learn_row(st, st.deferred.pop(0), baseline[0], ctx)
                else:
                    self._learn_row(st, row, baseline[0], ctx)
        if p.sequential:
            st.seq_ref = self._sequential_reference(st, baseline, ctx)
        rows = [r for r in st.buckets if r[_START] < at]
        if at <= st.judged_at:
            # Already judged at a later moment (on an event): this older window only teaches.
            if st.lc.active:
                for r in rows:
                    r[_TAINTED] = True
            return
        verdict = self._judge(st, rows, at, lo, baseline)
        self._step(st, verdict, rows, at, max(now, at), ctx)

    def _judge_now(self, st: RefusalSpikeState, now: float, ctx: Context) -> None:
        """Judge the window that ends at ``now`` (the current bucket so far included) for a breach
        or its sustain; buckets are learnt and the clear is judged at bucket boundaries only."""
        if st.lc.status == "firing":
            return
        lo = now - self.params.window_s
        rows = [r for r in st.buckets if r[_START] + self.params.bucket_s > lo]
        verdict = self._judge(st, rows, now, lo, self._baseline(st, ctx))
        self._step(st, verdict, rows, now, now, ctx)

    def _step(self, st: RefusalSpikeState, verdict: "_Verdict", rows: list, at: float, now: float,
              ctx: Context) -> None:
        lc = st.lc
        was = lc.status
        st.judged_at = at
        action = self.policy.step(lc, at, verdict.breached, verdict.cleared)
        if action is None and verdict.seq_breached and lc.status == "pending":
            lc.since = min(lc.since, at - self.params.for_s)  # accumulated evidence is its own sustain
            action = self.policy.step(lc, at, True, False)
        if lc.active:
            st.deferred = []  # part of the rise: never learnt
        if was == "ok" and lc.status != "ok":
            st.breach_start = verdict.best_start
            lc.peak = 0.0
        if lc.active or verdict.breached:
            lc.peak = max(lc.peak, verdict.rate, verdict.best_rate)
            for r in rows:
                r[_TAINTED] = True
        st.last_eval = [verdict.n, verdict.k, verdict.rate, verdict.p0, verdict.window_start, at]
        if action == "trigger":
            self._emit_trigger(st, verdict, now, ctx)
        elif action == "resolve":
            self._emit_resolve(st, now, ctx, idle=False, verdict=verdict)

    def _judge(self, st: RefusalSpikeState, rows: list, at: float, lo: float,
               baseline: tuple[float, str, float, float]) -> _Verdict:
        """Clear on the whole window; breach on the most significant recent sub-window.

        Sub-windows are the window's suffixes from ``short_window_s`` to ``window_s``: a sharp
        onset shows in a short suffix before it moves the whole window, a slow trickle at low
        volume only in the long one. Each must pass volume, refusals and materiality by itself.
        """
        p = self.params
        n = sum(r[_N] for r in rows)
        k = sum(r[_K] for r in rows)
        flagged = sum(r[_FLAGGED] for r in rows)
        p0, source, history, disp = baseline
        rate = k / n if n else 0.0
        window_start = rows[0][_START] if rows else lo
        v = _Verdict(at=at, window_start=window_start, n=n, k=k, flagged=flagged, rate=rate, p0=p0,
                     baseline_from=source, history_n=history, dispersion=disp, breached=False,
                     cleared=(n > 0 and rate <= p0 + p.clear_increase))
        if history < p.min_baseline_n:
            return v  # learning only
        if n < p.min_volume or k < p.min_refused:
            if p.sequential:  # no sub-window can pass; everything since the onset still may
                self._sequential_verdict(st, v)
            return v
        log_alpha = math.log(p.alpha)
        sn = sk = 0
        who: set = set()
        for r in reversed(rows):
            sn += r[_N]
            sk += r[_K]
            if len(r) > _WHO:
                who.update(r[_WHO])
            if at - r[_START] < p.short_window_s - 1e-9:
                continue
            if sn < p.min_volume or sk < p.min_refused or len(who) < p.min_conversations:
                continue
            srate = sk / sn
            if srate - p0 < p.min_increase or srate < p.min_ratio * p0:
                continue
            log_p = self._log_pvalue(sk, sn, p0, disp)
            if not v.best_n or log_p < v.log_p:
                v.best_n, v.best_k, v.best_rate, v.best_start, v.log_p = sn, sk, srate, r[_START], log_p
        v.breached = bool(v.best_n) and v.log_p < log_alpha
        if p.sequential:
            self._sequential_verdict(st, v)
        return v

    @staticmethod
    def _log_pvalue(k: int, n: int, p0: float, disp: float) -> float:
        if disp > 1.0:  # effective sample size under over-dispersion
            n, k = max(1, round(n / disp)), round(k / disp)
        return binom_logsf(k, n, p0)

    def _critical_rate(self, n: int, p0: float, disp: float) -> float:
        """The smallest window rate that would have been significant and material at volume n."""
        p = self.params
        log_alpha = math.log(p.alpha)
        lo, hi = 0, n + 1  # smallest k in [0, n] with p-value < alpha; n+1 when none
        while lo < hi:
            mid = (lo + hi) // 2
            if self._log_pvalue(mid, n, p0, disp) < log_alpha:
                hi = mid
            else:
                lo = mid + 1
        lo = max(lo, p.min_refused)
        return max(p0 + p.min_increase, p.min_ratio * p0, min(lo / n, 1.0) if n else 1.0)

    # -- the sequential test --------------------------------------------------------------------
    def _sequential_reference(self, st: RefusalSpikeState, baseline: tuple[float, str, float, float],
                              ctx: Context) -> list:
        """[p0, dispersion, h, log-ratios (refused, not) for the material and the large rise]."""
        p = self.params
        p0, _, _, disp = baseline
        p0 = min(max(p0, 1e-6), 0.98)
        material = min(max(p0 + p.min_increase, p.min_ratio * p0), 0.99)
        large = min(p0 + 3.0 * (material - p0), 0.995)
        # Requests per day: the busiest level of the baseline hierarchy (decayed counts in steady
        # state hold rate x half-life / ln 2); a new prompt version inherits its route's traffic.
        per_day = st.base_n
        for fields in self._scopes:
            level = ctx.get(self, self._scope_segment(st.segment, fields))
            if level is not None:
                per_day = max(per_day, level.base_n)
        per_day *= math.log(2) * 86400.0 / p.baseline_half_life_s
        h = max(-math.log(p.alpha), math.log(max(per_day * p.sequential_false_alarm_days, 1.0)))
        h += math.log(2.0)  # two alternatives tested
        return [p0, disp, h,
                math.log(material / p0), math.log((1 - material) / (1 - p0)),
                math.log(large / p0), math.log((1 - large) / (1 - p0))]

    def _sequential_update(self, st: RefusalSpikeState, refused: bool, event: RunEvent,
                           ctx: Context) -> None:
        ref = st.seq_ref
        if not ref:
            ref = st.seq_ref = self._sequential_reference(st, self._baseline(st, ctx), ctx)
        _, disp, h = ref[0], max(ref[1], 1.0), ref[2]
        seq = st.seq
        up = (ref[3], ref[5]) if refused else (ref[4], ref[6])
        for j in (0, 1):
            seq[j] = min(max(0.0, seq[j] + up[j] / disp), 2.0 * h)  # capped: recovery stays bounded
        if seq[0] <= 0.0 and seq[1] <= 0.0:
            seq[2:] = [0, 0, 0.0, []]
            if st.deferred:  # the rise did not materialise: its buckets were ordinary after all
                p0 = ref[0]
                for row in st.deferred:
                    self._learn_row(st, row, p0, ctx)
                st.deferred = []
            return
        if seq[2] == 0:
            seq[4] = event.ts
        seq[2] += 1
        if refused:
            seq[3] += 1
            who = seq[5]
            if len(who) < self.params.min_conversations:
                hsh = zlib.crc32((event.conversation_id or event.run_id).encode())
                if hsh not in who:
                    who.append(hsh)

    def _sequential_verdict(self, st: RefusalSpikeState, v: "_Verdict") -> None:
        p = self.params
        if not st.seq_ref:
            return
        seq, h = st.seq, st.seq_ref[2]
        v.seq_llr, v.seq_h = max(seq[0], seq[1]), h
        v.cleared = v.cleared and v.seq_llr < h / 2.0
        n, k = seq[2], seq[3]
        if v.seq_llr < h or k < p.min_refused or len(seq[5]) < p.min_conversations or not n:
            return
        rate = k / n
        honest = (k - 1) / (n - 1) if n > 1 else 0.0  # without the refusal that began it (selected)
        if honest - v.p0 < p.min_increase or honest < p.min_ratio * v.p0:
            return
        v.seq_breached = True
        if not v.breached:
            v.breached = True
            v.best_n, v.best_k, v.best_rate, v.best_start = n, k, rate, seq[4]
            v.log_p = -v.seq_llr  # likelihood ratio in place of a p-value (Wald: P <= 1/LR)
            v.decided_by = "sequential"

    def _learn_row(self, st: RefusalSpikeState, row: list, p0: float, ctx: Context) -> None:
        """Learn one bucket ([start, n, k, ...]) into the baseline and the dispersion estimate."""
        self._learn(st, row[_N], row[_K], row[_START] + self.params.bucket_s, ctx)
        self._learn_dispersion(st, row, p0)

    # -- baseline ------------------------------------------------------------------------------
    def _scope_segment(self, segment: dict[str, str], fields: tuple[str, ...]) -> dict[str, str]:
        out = {SCOPE_FIELD: "\x00" + ",".join(fields)}
        out.update((f, segment.get(f, "")) for f in fields)
        return out

    def _baseline(self, st: RefusalSpikeState, ctx: Context) -> tuple[float, str, float, float]:
        """(p0, where it comes from, decayed history behind it, over-dispersion to apply)."""
        p = self.params
        levels: list[tuple[str, Optional[BaselineCounts]]] = [("segment", st)]
        for fields in self._scopes:
            levels.append(("+".join(fields), ctx.get(self, self._scope_segment(st.segment, fields))))
        rate, weight = p.prior_rate, p.prior_strength
        history = 0.0
        for _, level in reversed(levels):
            if level is None:
                continue
            rate = (level.base_k + weight * rate) / (level.base_n + weight)
            weight = p.parent_strength
            history += level.base_n
        source, disp = "prior", 1.0
        for name, level in levels:
            if level is not None and level.base_n >= p.parent_strength:
                source = name
                break
        if st.disp_w >= min(20.0, p.dispersion_memory):  # a settled estimate of its own
            disp = min(max(st.disp, 1.0), p.max_dispersion)
        return rate, source, history, disp

    def _learn_dispersion(self, st: RefusalSpikeState, row: list, p0: float) -> None:
        """Clean learnt buckets form back-to-back windows; each one's Pearson statistic against
        the baseline (1 for binomial counts, more when refusals come in bursts) feeds an EWMA."""
        p = self.params
        if not st.block:
            st.block = [row[_START], 0, 0]
        st.block[1] += row[_N]
        st.block[2] += row[_K]
        if row[_START] + p.bucket_s - st.block[0] < p.window_s:
            return
        _, n, k = st.block
        st.block = []
        expected = n * p0
        if expected < 1.0 or p0 >= 1.0:
            return  # too few expected refusals for the statistic to mean anything
        stat = min((k - expected) ** 2 / (expected * (1.0 - p0)), 50.0)
        st.disp_w = min(st.disp_w + 1.0, p.dispersion_memory)
        st.disp += (stat - st.disp) / st.disp_w

    def _learn(self, st: RefusalSpikeState, n: int, k: int, at: float, ctx: Context) -> None:
        p = self.params
        st.learn(n, k, at, p.baseline_half_life_s)
        for fields in self._scopes:
            scope = ctx.state(self, self._scope_segment(st.segment, fields),
                              lambda: BaselineCounts(segment={}), at)
            if scope is not None:
                scope.learn(n, k, at, p.baseline_half_life_s)

    # -- incidents -----------------------------------------------------------------------------
    def _severity(self, v: _Verdict) -> str:
        """Magnitude: the breaching sub-window's rate. Blast radius: its traffic, per window_s (a
        prompt version rolled out a minute ago has a short history, not a small audience)."""
        p = self.params
        volume = max(v.best_n * p.window_s / max(v.at - v.best_start, p.short_window_s), v.n)
        if v.best_rate >= p.sev1_min_rate and volume >= p.sev1_min_requests:
            return "SEV-1"
        if v.best_rate - v.p0 < p.sev3_max_increase or volume < p.sev3_max_requests:
            return "SEV-3"
        return p.severity

    def _label(self, segment: dict[str, str]) -> str:
        head = "/".join(segment[f] for f in ("app", "route") if segment.get(f))
        rest = " ".join(v for f, v in segment.items() if f not in ("app", "route") and v)
        return " ".join(x for x in (head, rest) if x) or self.name

    def _evidence(self, st: RefusalSpikeState, v: Optional[_Verdict]) -> dict[str, Any]:
        # The samples were redacted when kept (the state holds no raw response text).
        ev = Evidence(run_ids=list(dict.fromkeys(s[0] for s in st.samples)),
                      event_ids=[s[1] for s in st.samples],
                      excerpts=[s[2] for s in st.samples if s[2]],
                      limit=self.params.evidence_samples).to_dict()
        ev["late_events"] = st.late
        if v is not None:
            ev.update({"window_requests": v.n, "window_refused": v.k, "flagged_excluded": v.flagged,
                       "baseline_from": v.baseline_from, "baseline_requests": round(v.history_n, 1),
                       "dispersion": round(v.dispersion, 3)})
            if v.best_n:
                ev.update({"requests": v.best_n, "refused": v.best_k,
                           "p_value": math.exp(v.log_p) if v.log_p > -700 else 0.0})
            if v.seq_h:
                ev.update({"test": v.decided_by, "sequential_log_lr": round(v.seq_llr, 3),
                           "sequential_h": round(v.seq_h, 3)})
        return ev

    def _emit_trigger(self, st: RefusalSpikeState, v: _Verdict, now: float, ctx: Context) -> None:
        summary = (f"{self._label(st.segment)}: {v.best_rate:.0%} of ordinary requests refused over "
                   f"{_nonnegative_duration(v.at - v.best_start)} ({v.best_k} of {v.best_n}; baseline {v.p0:.1%})")
        severity = self._severity(v)
        st.lc.severity = severity
        evidence = self._evidence(st, v)
        ctx.emit(self.incident(
            action="trigger", segment=st.segment, summary=summary, severity=severity,
            window_start=v.best_start, window_end=v.at, detected_at=now, ctx=ctx,
            observed=v.best_rate, baseline=v.p0,
            threshold=self._critical_rate(v.best_n, v.p0, v.dispersion),
            score=min(-v.log_p / math.log(10), SCORE_CAP), evidence=evidence))

    def _emit_resolve(self, st: RefusalSpikeState, now: float, ctx: Context, idle: bool,
                      verdict: Optional[_Verdict]) -> None:
        p = self.params
        label = self._label(st.segment)
        peak = st.lc.peak
        if idle or verdict is None:
            summary = (f"resolved: {label}: no traffic for {_nonnegative_duration(now - st.max_ts)} "
                       f"(peak refusal rate {peak:.0%})")
            observed = baseline = None
            if st.last_eval:
                observed, baseline = st.last_eval[2], st.last_eval[3]
        else:
            summary = (f"resolved: {label}: refusal rate back to {verdict.rate:.1%} "
                       f"(baseline {verdict.p0:.1%}; peak {peak:.0%})")
            observed, baseline = verdict.rate, verdict.p0
        ev = self._evidence(st, verdict)
        ev["resolved_by"] = "idle" if idle else "recovered"
        ev["peak_rate"] = peak
        ctx.emit(self.incident(
            action="resolve", segment=st.segment, summary=summary,
            severity=st.lc.severity or p.severity,
            window_start=st.breach_start, window_end=max(now, st.breach_start), detected_at=now,
            ctx=ctx, observed=observed, baseline=baseline,
            threshold=(baseline + p.clear_increase) if baseline is not None else None,
            evidence=ev))

    # -- contract test -------------------------------------------------------------------------
    def probe(self, segment: dict[str, str], window: dict) -> SignalProbe:
        p = self.params
        last: list = [None]  # the evaluation time of the last point: one point per evaluation

        def read(engine, event) -> Optional[Point]:
            st = engine.get(self, segment)
            if st is None or not st.last_eval or st.last_eval[5] == last[0]:
                return None
            n, k, rate, p0, _, at = st.last_eval[:6]
            last[0] = at
            return (at, rate if n else None, p0, max(p0 + p.min_increase, p.min_ratio * p0), None)

        return SignalProbe(f"refusal rate over {p.window_s:g} s", read,
                           "material: max(baseline + min_increase, min_ratio × baseline)")

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"for_s": 30.0}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        """30 min at 1 request/s with 2% refusals, then 5 min of 50% refusals."""
        def events(t0: float, seconds: int, every: int, tag: str) -> list[dict]:
            out = []
            for i in range(seconds):
                out.append({
                    "schema_version": "1", "event_id": f"{tag}-{i}", "run_id": f"{tag}-r{i}",
                    "ts": t0 + i, "app": "support-bot", "route": "billing", "model": "gpt-4o-mini",
                    "prompt_version": "v12", "refusal": i % every == 0, "request_flagged": False,
                    "response_text": "I can't help with that." if i % every == 0 else "Sure.",
                })
            return out

        t0 = 1_767_600_000.0
        return events(t0, 1800, 50, "n"), events(t0 + 1800, 300, 2, "a")


def _nonnegative_duration(seconds: float) -> str:
    return duration(max(0.0, seconds))
