"""Event-time sliding windows with a lifecycle: the base of windowed detectors and rules.

Events go to ``bucket_s`` buckets per segment, and the window ending at a bucket boundary is
evaluated once the watermark passes that boundary, so the result does not depend on arrival order or
batching. An event later than the allowed lateness whose bucket is already evaluated is not added to
a closed window; it is counted (``evidence.late_events_dropped``).

Subclasses (``rules/threshold.py``, ``detectors/wrong_entity_rate.py``) fill buckets in ``observe``
and say how a window's totals become a value and when that value breaches or clears.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Optional

from pydantic import Field, ValidationInfo, field_validator

from semwatch.contract import RunEvent
from semwatch.engine.detector import Context, Detector, DetectorParams, SegmentState
from semwatch.engine.lifecycle import Lifecycle, LifecyclePolicy
from semwatch.engine.state import PlainState, state_type
from semwatch.engine.tuning import Point, SignalProbe

MAX_BUCKETS_PER_WINDOW = 1440
_SAMPLES = 5  # evidence: recent matching events kept per segment


@state_type("window_bucket")
@dataclass(slots=True)
class Bucket(PlainState):
    n: int = 0  # events (or calls) in the population
    hits: int = 0  # of which matched / true / out of scope
    nv: int = 0  # numeric values
    total: float = 0.0  # their sum
    sketch: Optional[dict[int, int]] = None  # their distribution (percentile aggregates only)
    samples: Optional[list[list[str]]] = None  # [run_id, event_id] of the first matching events


@state_type("window_segment")
@dataclass(slots=True)
class WindowState(SegmentState):
    buckets: dict[int, Bucket] = dc_field(default_factory=dict)
    closed: Optional[int] = None  # buckets with a lower index are closed (evaluated)
    lc: Lifecycle = dc_field(default_factory=Lifecycle)
    late_dropped: int = 0
    value: Optional[float] = None  # at the last evaluation
    volume: int = 0


class WindowParams(DetectorParams):
    """Event-time sliding window and lifecycle settings shared by windowed detectors."""

    window_s: float = Field(default=300.0, gt=0, le=7 * 86400)
    bucket_s: Optional[float] = Field(default=None, gt=0, validate_default=True)
    min_volume: int = Field(default=1, ge=0)
    for_s: float = Field(default=0.0, ge=0)
    clear_for_s: float = Field(default=0.0, ge=0)

    @field_validator("window_s")
    @classmethod
    def _window_fits_ttl(cls, value: float, info: ValidationInfo) -> float:
        ttl = info.data.get("idle_ttl_s")
        if ttl is not None and value > ttl:
            raise ValueError(f"window_s ({value:g}) must not exceed idle_ttl_s ({ttl:g}), or idle "
                             "segments would be forgotten while their window still counts")
        return value

    @field_validator("bucket_s")
    @classmethod
    def _bucket_divides_window(cls, value: Optional[float], info: ValidationInfo) -> Optional[float]:
        window = info.data.get("window_s")
        if value is None or window is None:
            return value
        ratio = window / value
        if value > window or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"bucket_s ({value:g}) must divide window_s ({window:g}) evenly")
        if round(ratio) > MAX_BUCKETS_PER_WINDOW:
            raise ValueError(f"window_s / bucket_s must be at most {MAX_BUCKETS_PER_WINDOW}")
        return value

    @property
    def bucket(self) -> float:
        """Bucket width: ``bucket_s``, or about a minute that divides the window evenly."""
        if self.bucket_s is not None:
            return self.bucket_s
        return self.window_s / min(MAX_BUCKETS_PER_WINDOW, max(1, round(self.window_s / 60)))

    @property
    def n_buckets(self) -> int:
        return max(1, round(self.window_s / self.bucket))


class WindowedDetector(Detector):
    """Counts events into event-time buckets per segment and runs the lifecycle at bucket boundaries.

    Subclasses fill buckets in ``observe`` (through :meth:`_bucket`) and define
    :meth:`_evaluate`, :meth:`_breached`, :meth:`_cleared` and :meth:`_describe`.
    """

    params: WindowParams

    def __init__(self, params: WindowParams, env: Any):
        super().__init__(params, env)
        self.policy = LifecyclePolicy(for_s=params.for_s, clear_for_s=params.clear_for_s)
        self._b = params.bucket
        self._nb = params.n_buckets

    # -- to implement --------------------------------------------------------------------------
    def _evaluate(self, totals: Bucket) -> tuple[Optional[float], int]:
        """(value, volume) of a window's totals; value None when undefined."""
        raise NotImplementedError

    def _breached(self, value: float) -> bool:
        raise NotImplementedError

    def _cleared(self, value: float) -> bool:
        raise NotImplementedError

    def _threshold(self) -> Optional[float]:
        return None

    def _describe(self, state: WindowState, value: Optional[float], action: str) -> str:
        raise NotImplementedError

    def _score(self, value: Optional[float]) -> Optional[float]:
        return None

    def _worst(self, a: float, b: float) -> float:
        """The more anomalous of two values (the resolve reports the worst seen while active)."""
        return max(a, b)

    def _new_state(self) -> WindowState:
        return WindowState(segment={})

    # -- buckets ---------------------------------------------------------------------------------
    def _bucket(self, state: WindowState, ts: float, ctx: Context) -> Optional[Bucket]:
        """The open bucket for ``ts``; None (and counted) for an event later than allowed.

        A bucket closes when the watermark (newest event time minus the allowed lateness) passes
        its end, so an event within the allowed lateness always finds its bucket open, and a late
        one (``ctx.late``) would land in a closed window: it is counted, not windowed. This keeps
        the result independent of when ticks happen to run.
        """
        idx = int(ts // self._b)
        if ctx.late or (state.closed is not None and state.active and idx < state.closed):
            state.late_dropped += 1
            ctx.changed(self, state)
            return None
        if state.closed is None or not state.active:
            # A new or idle segment: nothing is pending, so its event time restarts here.
            state.closed = idx if state.closed is None else max(state.closed, idx)
        bucket = state.buckets.get(idx)
        if bucket is None:
            bucket = state.buckets[idx] = Bucket()
        state.active = True
        ctx.changed(self, state)
        return bucket

    @staticmethod
    def _sample(bucket: Bucket, event: RunEvent) -> None:
        """Remember a matching event as evidence (the first few per bucket: deterministic)."""
        if bucket.samples is None:
            bucket.samples = []
        if len(bucket.samples) < _SAMPLES:
            bucket.samples.append([event.run_id, event.event_id])

    def _window_totals(self, state: WindowState, end: int) -> tuple[Bucket, bool]:
        totals = Bucket()
        any_data = False
        for idx in range(end - self._nb, end):
            b = state.buckets.get(idx)
            if b is None:
                continue
            any_data = True
            totals.n += b.n
            totals.hits += b.hits
            totals.nv += b.nv
            totals.total += b.total
            if b.sketch:
                if totals.sketch is None:
                    totals.sketch = {}
                for k, c in b.sketch.items():
                    totals.sketch[k] = totals.sketch.get(k, 0) + c
        return totals, any_data

    # -- time --------------------------------------------------------------------------------------
    def advance(self, state: SegmentState, watermark: float, ctx: Context) -> None:
        if not isinstance(state, WindowState) or state.closed is None:
            return
        target = int(watermark // self._b)
        e = state.closed + 1
        while e <= target:
            totals, any_data = self._window_totals(state, e)
            value, volume = self._evaluate(totals)
            if volume < self.params.min_volume:
                value = None  # too little to decide either way ...
            breached = value is not None and self._breached(value)
            # ... so a firing incident stays open, unless traffic stopped altogether.
            cleared = not breached and (volume == 0 or (value is not None and self._cleared(value)))
            if not any_data and not breached and state.lc.status == "ok":
                # Empty windows in a quiet segment all look alike: jump to the next data.
                ahead = [i for i in state.buckets if i >= e]
                if not ahead:
                    break
                e = max(e + 1, min(ahead) + 1)
                continue
            state.value, state.volume = value, volume
            was = state.lc.status
            action = self.policy.step(state.lc, e * self._b, breached, cleared)
            if value is not None and state.lc.active:
                state.lc.peak = value if was == "ok" else self._worst(state.lc.peak, value)
            if action:
                self._emit(state, action, e * self._b, value, volume, ctx)
            e += 1
        state.closed = max(state.closed, target)
        horizon = target + 1 - self._nb
        for idx in [i for i in state.buckets if i < horizon]:
            del state.buckets[idx]
        state.active = state.lc.active or bool(state.buckets)
        ctx.changed(self, state)

    def probe(self, segment: dict[str, str], window: dict) -> SignalProbe:
        p = self.params
        last: list = [None]
        level = getattr(p, "above", None)
        level = level if level is not None else getattr(p, "below", None)

        def read(engine, event) -> Optional[Point]:
            st = engine.get(self, segment)
            if st is None or st.closed is None or st.closed == last[0]:
                return None
            last[0] = st.closed
            return (st.closed * self._b, st.value, None, level, None)

        what = getattr(p, "aggregate", "rate")
        field_name = getattr(p, "field", None) or "out-of-scope calls"
        return SignalProbe(f"{what} of {field_name} over {p.window_s:g} s", read)

    def _trigger_severity(self, state: WindowState) -> str:
        return self.params.severity

    def _emit(self, state: WindowState, action: str, end: float, value: Optional[float],
              volume: int, ctx: Context) -> None:
        start = end - self.params.window_s
        if action == "trigger":
            state.lc.severity = self._trigger_severity(state)
        recent: list[list[str]] = []
        last = int(round(end / self._b))
        for idx in range(last - 1, last - 1 - self._nb, -1):  # newest bucket first
            b = state.buckets.get(idx)
            if b is not None and b.samples:
                recent.extend(b.samples[: _SAMPLES - len(recent)])
            if len(recent) >= _SAMPLES:
                break
        evidence = {
            "run_ids": list(dict.fromkeys(s[0] for s in recent)),
            "event_ids": [s[1] for s in recent],
            "volume": volume,
            "late_events_dropped": state.late_dropped,
        }
        if action == "resolve":
            evidence["peak"] = state.lc.peak
        ctx.emit(self.incident(
            action=action, segment=state.segment, summary=self._describe(state, value, action),
            window_start=start, window_end=end, detected_at=end, ctx=ctx,
            severity=state.lc.severity or self.params.severity, observed=value,
            threshold=self._threshold(), score=self._score(value), evidence=evidence,
        ))
