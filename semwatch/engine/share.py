"""A share of events rising over its own baseline: the statistics behind the "share" detectors.

Many semantic symptoms are the share of a segment's events that have some property — truncated or
far longer than usual (``token_shift``), a malformed tool call, a complaint — rising materially and
significantly above what that segment normally shows. :class:`ShareSpikeDetector` is their shared
machinery; a subclass says only which events count (``hit``) and how to word the incident.

Statistics, per segment:

- **Baseline**: decayed counts of events and hits (half-life ``baseline_half_life_s``), shrunk
  towards ``prior_rate`` (worth ``prior_strength`` events), so ``p0 = (k + s·prior) / (n + s)``.
- **Sequential test**: two CUSUMs of the per-event log-likelihood ratio of "hit at the material
  rate" (``max(p0 + min_increase, min_ratio · p0)``, and three times as far above ``p0``) against
  "hit at ``p0``", never below zero. Either reaching ``h`` is a breach once ``min_hits`` hits from
  ``min_runs`` runs have come since the rise began, at a material rate (without the hit that
  began it, which the selection made certain):
  ``h = max(ln(1/alpha), ln(events per day × false_alarm_days)) + ln 2``. By Lorden's bound a
  CUSUM's mean run between false alarms is at least ``e^h`` events, so one segment false-alarms less
  than once in ``false_alarm_days`` at its own traffic, whatever that traffic is: a busy segment is
  judged within seconds, a quiet one on everything since its rise began.
- **Protected learning**: events are learnt only while both CUSUMs are at zero; while evidence is
  up they wait, and are learnt if it falls back to zero or dropped if it triggers (score first, then
  learn; never learn from what was flagged).
- **Lifecycle**: trigger at the breach (accumulated evidence is its own sustain); resolve when the
  evidence falls below ``h / 2`` and the share since the trigger's last ``clear_events`` events is
  back within ``clear_increase`` of ``p0``, or when the segment gets no traffic for
  ``idle_resolve_s`` (or ten of its mean gaps, if longer).

>>> share_threshold(events_per_day=1440, false_alarm_days=90, alpha=1e-5) > math.log(1e5)
True
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import Field, model_validator

from semwatch.contract import RunEvent
from semwatch.engine.detector import Context, Detector, DetectorParams, SegmentState
from semwatch.engine.formatting import duration, segment_text
from semwatch.engine.lifecycle import Lifecycle
from semwatch.engine.state import state_type
from semwatch.engine.tuning import Point, SignalProbe

_DAY = 86400.0


def onset_unbiased(k: int, n: int) -> float:
    """The share since the onset without the hit that marked it: a CUSUM leaves zero only on a hit,
    so counting from there is biased by exactly that one.

    >>> onset_unbiased(5, 35)
    0.11764705882352941
    """
    return (k - 1) / (n - 1) if n > 1 else 0.0


def share_threshold(events_per_day: float, false_alarm_days: float, alpha: float) -> float:
    """The CUSUM threshold h for two alternatives at this traffic (see the module docstring)."""
    return max(-math.log(alpha), math.log(max(events_per_day * false_alarm_days, 1.0))) + math.log(2.0)


class ShareParams(DetectorParams):
    """Settings of every share detector; every number says what raising it does."""

    # Material: the share must exceed the baseline by this much (absolute) ... (raise: fewer pages)
    min_increase: float = Field(default=0.10, gt=0, lt=1)
    # ... and be at least this multiple of it.
    min_ratio: float = Field(default=2.0, ge=1)
    # Floor of the significance: the likelihood ratio must exceed 1/alpha at the least.
    alpha: float = Field(default=1e-5, gt=0, lt=0.5)
    # One segment false-alarms less than once in this many days at its own traffic (raise: later).
    false_alarm_days: float = Field(default=90.0, gt=0)
    # Hits, and distinct runs (conversation_id, else run_id) among them, since the rise began.
    min_hits: int = Field(default=4, ge=1)
    min_runs: int = Field(default=3, ge=1, le=64)
    # The share assumed for a brand-new segment, worth this many events.
    prior_rate: float = Field(default=0.02, gt=0, lt=1)
    prior_strength: float = Field(default=100.0, gt=0)
    # Judge only once the baseline has learnt this many events (a new segment first learns).
    min_baseline_n: float = Field(default=200.0, ge=0)
    baseline_half_life_s: float = Field(default=6 * 3600.0, gt=0)
    # Events waiting to be learnt while evidence is up; beyond this the oldest are learnt anyway.
    max_pending: int = Field(default=5000, ge=0)
    # Resolve: the share over the last clear_events events within clear_increase of the baseline.
    clear_increase: float = Field(default=0.05, ge=0, lt=1)
    clear_events: int = Field(default=20, ge=1)
    idle_resolve_s: float = Field(default=600.0, gt=0)
    evidence_samples: int = Field(default=5, ge=0, le=20)

    @model_validator(mode="after")
    def _consistent(self) -> "ShareParams":
        if self.clear_increase > self.min_increase:
            raise ValueError("clear_increase must not exceed min_increase (hysteresis)")
        if self.min_runs > self.min_hits:
            raise ValueError("min_runs must not exceed min_hits")
        return self


class NormRingParams(ShareParams):
    """Share detectors that judge each event against the segment's own recent norm (a
    :class:`semwatch.engine.baselines.SampleRing`): its size and sampling."""

    # The norm: a ring of recent values, one per sample_every_s, recomputed every refresh_s; it
    # judges nothing before it holds min_samples.
    ring_size: int = Field(default=256, ge=16, le=4096)
    sample_every_s: float = Field(default=2.0, ge=0)
    refresh_s: float = Field(default=60.0, gt=0)
    min_samples: int = Field(default=50, ge=5)


@state_type("share")
@dataclass(slots=True)
class ShareState(SegmentState):
    base_n: float = 0.0  # learnt events (decayed)
    base_k: float = 0.0  # learnt hits (decayed)
    base_t: float = 0.0
    seen_n: float = 0.0  # all events (decayed): the segment's traffic, for h
    pend_n: int = 0  # events waiting to be learnt while evidence is up
    pend_k: int = 0
    s_material: float = 0.0
    s_large: float = 0.0
    n: int = 0  # events and hits since the rise began
    k: int = 0
    onset: float = 0.0
    runs: list = field(default_factory=list)  # crc32 of the runs behind those hits (capped)
    recent: list = field(default_factory=list)  # 1/0 per event since the trigger, last clear_events
    last_ts: float = -math.inf
    lc: Lifecycle = field(default_factory=Lifecycle)
    samples: list = field(default_factory=list)  # [run_id, event_id, detail] of recent hits


class ShareSpikeDetector(Detector):
    """Base of the share detectors. Subclasses implement :meth:`hit` and :meth:`describe`."""

    params: ShareParams
    Params = ShareParams

    # -- to implement ----------------------------------------------------------------------------
    def hit(self, event: RunEvent, st: ShareState, ctx: Context) -> Optional[bool]:
        """Whether this event has the property (None: the event does not count at all). Called
        before the event is scored; ``learning`` (no evidence up) is available as
        ``self.learning(st)`` for subclasses that keep their own reference data."""
        raise NotImplementedError

    def describe(self, st: ShareState, rate: float, p0: float, action: str) -> str:
        """One line for a paged human."""
        where = segment_text(st.segment)
        if action == "resolve":
            return f"resolved: {where}: {self.what} back to {rate:.1%} (baseline {p0:.1%})"
        return (f"{where}: {rate:.0%} of {self.unit} {self.what} over {duration(max(st.last_ts - st.onset, 0.0))} "
                f"({st.k} of {st.n}; baseline {p0:.1%})")

    what = "hit"  # "truncated or far longer than usual"
    unit = "events"  # what one outcome counts, for summaries ("calls" for a per-call detector)

    def detail(self, event: RunEvent, st: ShareState) -> str:
        """A redacted, bounded detail of a hit for the evidence (e.g. which field was wrong)."""
        return ""

    def outcomes(self, event: RunEvent, st: ShareState, ctx: Context) -> Optional[list[tuple[bool, str]]]:
        """``(hit, detail)`` for every unit this event adds to the share (None or []: it adds none).

        By default the event is one unit (:meth:`hit`, :meth:`detail`); a detector that counts
        parts of an event (every tool call) returns one pair per part, each scored as one unit.
        """
        hit = self.hit(event, st, ctx)
        if hit is None:
            return None
        return [(hit, self.detail(event, st) if hit and self.params.evidence_samples else "")]

    # -- the event path --------------------------------------------------------------------------
    @staticmethod
    def learning(st: ShareState) -> bool:
        return st.s_material <= 0.0 and st.s_large <= 0.0 and not st.lc.active

    def _new_state(self) -> ShareState:
        return ShareState(segment={})

    def observe(self, event: RunEvent, ctx: Context) -> None:
        segment = self.segment_of(event)
        st = ctx.state(self, segment, self._new_state, event.ts)
        if st is None or ctx.late:
            return
        units = self.outcomes(event, st, ctx)
        if not units:
            return
        self._decay(st, event.ts)
        for hit, detail in units:
            self._step(event, st, hit, detail, ctx)
        st.active = st.lc.active
        ctx.changed(self, st)

    def _step(self, event: RunEvent, st: ShareState, hit: bool, detail: str, ctx: Context) -> None:
        """Score one unit, then learn it (or hold it while evidence is up)."""
        p = self.params
        ts = event.ts
        st.seen_n += 1.0
        st.last_ts = max(st.last_ts, ts)
        p0 = self.baseline(st)
        if st.base_n < p.min_baseline_n:  # a new segment first learns
            st.base_n += 1.0
            st.base_k += hit
            return
        h = share_threshold(st.seen_n * math.log(2) * _DAY / p.baseline_half_life_s,
                            p.false_alarm_days, p.alpha)
        self._cusum(st, hit, p0, h)
        if hit:
            if len(st.runs) < p.min_runs:
                who = zlib.crc32((event.conversation_id or event.run_id).encode())
                if who not in st.runs:
                    st.runs.append(who)
            if p.evidence_samples:
                st.samples.append([event.run_id, event.event_id, detail])
                del st.samples[:-p.evidence_samples]
        if st.lc.status == "firing":
            st.recent.append(1 if hit else 0)
            del st.recent[:-p.clear_events]
            rate = sum(st.recent) / len(st.recent)
            if len(st.recent) >= p.clear_events and max(st.s_material, st.s_large) < h / 2.0 \
                    and rate <= p0 + p.clear_increase:
                self._resolve(st, ts, rate, p0, ctx, "recovered")
        elif max(st.s_material, st.s_large) >= h and st.k >= p.min_hits and len(st.runs) >= p.min_runs:
            rate = st.k / st.n
            honest = onset_unbiased(st.k, st.n)
            if honest - p0 >= p.min_increase and honest >= p.min_ratio * p0:
                self._trigger(st, ts, rate, p0, h, ctx)

    def advance(self, state: SegmentState, watermark: float, ctx: Context) -> None:
        st = state
        if not isinstance(st, ShareState) or st.lc.status != "firing":
            return
        idle = self.params.idle_resolve_s
        if st.n >= 2 and st.last_ts > st.onset:
            idle = max(idle, 10.0 * (st.last_ts - st.onset) / (st.n - 1))
        if watermark - st.last_ts >= idle:
            self._resolve(st, max(watermark, st.last_ts), None, self.baseline(st), ctx, "idle")
            ctx.changed(self, st)

    # -- statistics ----------------------------------------------------------------------------
    def baseline(self, st: ShareState) -> float:
        p = self.params
        return (st.base_k + p.prior_strength * p.prior_rate) / (st.base_n + p.prior_strength)

    def _decay(self, st: ShareState, ts: float) -> None:
        if ts > st.base_t:
            if st.base_t > 0.0:
                f = 0.5 ** ((ts - st.base_t) / self.params.baseline_half_life_s)
                st.base_n *= f
                st.base_k *= f
                st.seen_n *= f
            st.base_t = ts

    def _cusum(self, st: ShareState, hit: bool, p0: float, h: float) -> None:
        p = self.params
        p0 = min(max(p0, 1e-6), 0.98)
        material = min(max(p0 + p.min_increase, p.min_ratio * p0), 0.99)
        large = min(p0 + 3.0 * (material - p0), 0.995)
        for name, p1 in (("s_material", material), ("s_large", large)):
            step = math.log(p1 / p0) if hit else math.log((1.0 - p1) / (1.0 - p0))
            setattr(st, name, min(max(0.0, getattr(st, name) + step), 2.0 * h))
        if st.s_material <= 0.0 and st.s_large <= 0.0 and not st.lc.active:
            # The rise did not materialise: what waited is ordinary after all.
            st.base_n += st.pend_n + 1
            st.base_k += st.pend_k + hit
            st.pend_n = st.pend_k = st.n = st.k = 0
            st.runs = []
            return
        if st.n == 0:
            st.onset = st.last_ts
        st.n += 1
        st.k += hit
        if not st.lc.active:
            st.pend_n += 1
            st.pend_k += hit
            if st.pend_n > p.max_pending:  # a long, slight rise: learn the oldest anyway
                st.base_n += 1
                st.base_k += st.pend_k / st.pend_n
                st.pend_n -= 1
                st.pend_k -= st.pend_k / (st.pend_n + 1)

    # -- incidents -----------------------------------------------------------------------------
    def extra_evidence(self, st: ShareState) -> dict[str, Any]:
        """What a subclass adds to every incident's evidence (e.g. counts by problem)."""
        return {}

    def _evidence(self, st: ShareState) -> dict[str, Any]:
        ev = {"run_ids": list(dict.fromkeys(s[0] for s in st.samples)),
              "event_ids": list(dict.fromkeys(s[1] for s in st.samples)),
              "details": [s[2] for s in st.samples if s[2]],
              f"{self.unit.replace(' ', '_')}_since_onset": st.n, "hits_since_onset": st.k}
        ev.update(self.extra_evidence(st))
        return ev

    def _trigger(self, st: ShareState, ts: float, rate: float, p0: float, h: float, ctx: Context) -> None:
        lc = st.lc
        lc.status, lc.since, lc.fired_at, lc.peak = "firing", st.onset, ts, rate
        lc.severity = self.params.severity
        st.pend_n = st.pend_k = 0  # part of the problem: never learnt
        st.recent = []
        llr = max(st.s_material, st.s_large)
        ev = self._evidence(st)
        ev.update({"log_likelihood_ratio": round(llr, 3), "threshold_h": round(h, 3)})
        ctx.emit(self.incident(
            action="trigger", segment=st.segment, summary=self.describe(st, rate, p0, "trigger"),
            window_start=st.onset, window_end=ts, detected_at=ts, ctx=ctx, observed=rate,
            baseline=p0, threshold=min(max(p0 + self.params.min_increase, self.params.min_ratio * p0), 1.0),
            score=llr / math.log(10), evidence=ev))

    def _resolve(self, st: ShareState, ts: float, rate: Optional[float], p0: float, ctx: Context,
                 why: str) -> None:
        lc = st.lc
        ev = self._evidence(st)
        ev.update({"resolved_by": why, "peak_rate": lc.peak})
        summary = (self.describe(st, rate, p0, "resolve") if rate is not None else
                   f"resolved: {segment_text(st.segment)}: no traffic for "
                   f"{duration(max(ts - st.last_ts, 0.0))} (peak {lc.peak:.0%} {self.what})")
        ctx.emit(self.incident(
            action="resolve", segment=st.segment, summary=summary, severity=lc.severity,
            window_start=lc.since, window_end=max(ts, lc.since), detected_at=ts, ctx=ctx,
            observed=rate, baseline=p0, evidence=ev))
        st.lc = Lifecycle()
        st.s_material = st.s_large = 0.0
        st.n = st.k = 0
        st.runs, st.recent = [], []
        st.active = False

    def probe(self, segment: dict[str, str], window: dict) -> SignalProbe:
        def read(engine: Any, event: RunEvent) -> Optional[Point]:
            st = engine.get(self, segment)
            if st is None:
                return None
            rate = st.k / st.n if st.n else None
            return (event.ts, rate, self.baseline(st), None, None)

        return SignalProbe(f"share of events {self.what} since the rise began", read, "material share")
