"""Static threshold rules on any event field or ``metrics.*``, written in YAML.

A rule in ``config/semwatch.yaml`` under ``rules:`` (``type: threshold`` is the default there)::

    - name: error-rate
      field: error_type          # any event field, metrics.x or feedback.x
      aggregate: rate            # rate | count | sum | mean | p50 | p90 | p95 | p99
      where: {route: checkout}   # equality filters (a list means any of; null means absent)
      group_by: [app, model]     # one window and one lifecycle per segment
      window_s: 300              # event-time sliding window, in buckets of bucket_s
      min_volume: 50             # fewer events: no decision (firing stays firing; an empty window clears)
      above: 0.2                 # or below: (exactly one)
      clear: 0.1                 # hysteresis: firing ends only at or below this (default: above)
      for_s: 120                 # the breach must hold this long before it fires
      clear_for_s: 300           # and the clear this long before it resolves
      severity: SEV-2
      runbook_url: https://...
      summary: "error rate {value:.0%} on {segment}"   # optional template

Aggregates over the events of one window that pass ``where``:

- ``rate``: the share whose ``field`` is true (true, non-zero, a non-empty string); without
  ``field``, the share of *all* events for which ``where`` holds (so ``where`` is then the
  condition, not a filter). ``skip_missing: true`` leaves events without the field out.
- ``count``: the number of events (with ``field``: of those where it is true).
- ``sum``, ``mean``: of the numeric values of ``field`` (true counts as 1).
- ``p50``/``p90``/``p95``/``p99``: percentile of ``field`` (a log-bucket sketch, within 1 %).

Windows are event-time and sliding: events go to ``bucket_s`` buckets, and the window ending at a
bucket boundary is evaluated once the watermark passes that boundary (so the result does not depend
on arrival order or batching). An event later than the allowed lateness whose bucket is already
evaluated is not added to a closed window; it is counted (``evidence.late_events_dropped``).

The windowing and lifecycle machinery is :class:`semwatch.engine.windows.WindowedDetector`, shared
with other windowed detectors (``wrong_entity_rate``).
"""

from __future__ import annotations

import math
import string
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator

from semwatch.contract import RunEvent
from semwatch.engine.detector import Context, DetectorParams, register
from semwatch.engine.fields import as_number, field_value, normalized_scalar, truthy
from semwatch.engine.formatting import segment_label, window_label
from semwatch.engine.tuning import LEVEL, Rel
from semwatch.engine.windows import Bucket, WindowedDetector, WindowParams, WindowState

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
NUMERIC_AGGREGATES = ("mean", "sum") + tuple(PERCENTILES)

# -- percentile sketch ---------------------------------------------------------------------------
_ALPHA = 0.01
_GAMMA = (1 + _ALPHA) / (1 - _ALPHA)
_LOG_GAMMA = math.log(_GAMMA)
_ZERO_KEY = -(2**31)


def _sketch_key(value: float) -> int:
    if value <= 1e-12:
        return _ZERO_KEY
    return int(math.ceil(math.log(value) / _LOG_GAMMA))


def _sketch_value(key: int) -> float:
    if key == _ZERO_KEY:
        return 0.0
    return 2 * _GAMMA**key / (_GAMMA + 1)


def sketch_quantile(sketch: dict[int, int], q: float) -> Optional[float]:
    """Nearest-rank quantile of a log-bucket sketch (relative error at most 1 %).

    >>> sk = {}
    >>> for v in range(1, 101): sk[_sketch_key(v)] = sk.get(_sketch_key(v), 0) + 1
    >>> round(sketch_quantile(sk, 0.95))
    95
    """
    n = sum(sketch.values())
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for key in sorted(sketch):
        seen += sketch[key]
        if seen >= rank:
            return _sketch_value(key)
    return _sketch_value(max(sketch))  # pragma: no cover



# -- the rule --------------------------------------------------------------------------------------
Scalar = Union[bool, int, float, str, None]
SUMMARY_FIELDS = ("name", "aggregate", "field", "value", "threshold", "op", "window", "window_s",
                  "volume", "segment")


class ThresholdParams(WindowParams):
    """One threshold rule. Validated at load; errors name the field."""

    type: str = "threshold"
    group_by: tuple[str, ...] = ("app", "route")
    aggregate: Literal["rate", "count", "sum", "mean", "p50", "p90", "p95", "p99"] = "rate"
    field: Optional[str] = Field(default=None, min_length=1, max_length=128,
                                 pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$",
                                 validate_default=True)
    where: dict[str, Union[Scalar, list[Scalar]]] = Field(default_factory=dict, validate_default=True)
    skip_missing: bool = False
    above: Optional[float] = None
    below: Optional[float] = Field(default=None, validate_default=True)
    clear: Optional[float] = None
    summary: Optional[str] = Field(default=None, max_length=300)

    @field_validator("field")
    @classmethod
    def _field_needed(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        agg = info.data.get("aggregate")
        if value is None and agg in NUMERIC_AGGREGATES:
            raise ValueError(f"aggregate {agg!r} needs a numeric field, e.g. field: latency_s")
        return value

    @field_validator("where")
    @classmethod
    def _where(cls, value: dict, info: ValidationInfo) -> dict:
        if info.data.get("aggregate") == "rate" and "field" in info.data and \
                info.data["field"] is None and not value:
            raise ValueError("aggregate 'rate' needs a field (share of events where it is true) or "
                             "a where condition (share of events where it holds)")
        for key, expected in value.items():
            if isinstance(expected, list) and not expected:
                raise ValueError(f"where.{key}: an empty list matches nothing")
        return value

    @field_validator("above", "below")
    @classmethod
    def _rate_is_a_share(cls, value: Optional[float], info: ValidationInfo) -> Optional[float]:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        if value is not None and info.data.get("aggregate") == "rate" and not 0 <= value <= 1:
            raise ValueError(f"a rate threshold is a share between 0 and 1 (20% is 0.2), got {value:g}")
        if info.field_name == "below":
            above = info.data.get("above")
            if above is None and value is None and "above" in info.data:
                raise ValueError("set exactly one of above or below (neither is set)")
            if above is not None and value is not None:
                raise ValueError("set exactly one of above or below (both are set)")
        return value

    @field_validator("clear")
    @classmethod
    def _clear_side(cls, value: Optional[float], info: ValidationInfo) -> Optional[float]:
        if value is None:
            return value
        above, below = info.data.get("above"), info.data.get("below")
        if above is not None and value > above:
            raise ValueError(f"clear ({value:g}) must be at or below the 'above' threshold "
                             f"({above:g}): the rule clears when the value falls back")
        if below is not None and value < below:
            raise ValueError(f"clear ({value:g}) must be at or above the 'below' threshold "
                             f"({below:g}): the rule clears when the value recovers")
        return value

    @field_validator("summary")
    @classmethod
    def _summary_template(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        try:
            for _, name, _spec, _conv in string.Formatter().parse(value):
                if name is None:
                    continue
                if name not in SUMMARY_FIELDS:
                    raise ValueError(f"unknown placeholder {{{name}}}; use any of "
                                     f"{', '.join(SUMMARY_FIELDS)}")
            value.format(**_dummy_summary_fields())
        except (ValueError, IndexError, KeyError) as exc:
            raise ValueError(f"bad summary template: {exc}") from None
        return value

    @property
    def threshold(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    @property
    def clear_at(self) -> float:
        return self.clear if self.clear is not None else self.threshold


def _dummy_summary_fields() -> dict[str, Any]:
    return dict(name="rule", aggregate="rate", field="error_type", value=0.5, threshold=0.2,
                op="above", window="5m", window_s=300.0, volume=100, segment="app=x")


@register
class ThresholdRule(WindowedDetector):
    """A static rule: ``aggregate(field)`` over a sliding event-time window vs a fixed threshold."""

    type_name: ClassVar[str] = "threshold"
    # The level and the sustain of a static rule.
    tuning_space: ClassVar[dict[str, Any]] = {LEVEL: Rel(0.5, 0.75, 1.0, 1.5), "for_s": Rel(0.5, 1.0)}
    kind: ClassVar[str] = "threshold"
    Params: ClassVar[type[DetectorParams]] = ThresholdParams
    params: ThresholdParams

    def __init__(self, params: ThresholdParams, env: Any):
        super().__init__(params, env)
        p = params
        self._where = {k: ({normalized_scalar(x) for x in v} if isinstance(v, list) else {normalized_scalar(v)})
                       for k, v in p.where.items()}
        self._rate_by_where = p.aggregate == "rate" and p.field is None
        self._sketch = p.aggregate in PERCENTILES
        self._numeric = p.aggregate in NUMERIC_AGGREGATES

    def _matches(self, event: RunEvent) -> bool:
        for key, allowed in self._where.items():
            if normalized_scalar(field_value(event, key)) not in allowed:
                return False
        return True

    def observe(self, event: RunEvent, ctx: Context) -> None:
        p = self.params
        raw = field_value(event, p.field) if p.field else None
        if self._rate_by_where:
            hit = self._matches(event)
        else:
            if self._where and not self._matches(event):
                return
            if p.skip_missing and p.field and raw is None:
                return
            hit = truthy(raw) if p.field else True
        number = as_number(raw) if self._numeric else None
        if self._numeric:
            hit = number is not None and (self._breached(number))
        state = ctx.state(self, self.segment_of(event), self._new_state, event.ts)
        if state is None:
            return
        bucket = self._bucket(state, event.ts, ctx)  # type: ignore[arg-type]
        if bucket is None:
            return
        bucket.n += 1
        if hit:
            bucket.hits += 1
            self._sample(bucket, event)
        if number is not None:
            bucket.nv += 1
            bucket.total += number
            if self._sketch:
                if bucket.sketch is None:
                    bucket.sketch = {}
                key = _sketch_key(number)
                bucket.sketch[key] = bucket.sketch.get(key, 0) + 1

    def _evaluate(self, totals: Bucket) -> tuple[Optional[float], int]:
        agg = self.params.aggregate
        if agg == "rate":
            return (totals.hits / totals.n if totals.n else None), totals.n
        if agg == "count":
            return float(totals.hits), totals.n
        if agg == "sum":
            return totals.total, totals.nv
        if agg == "mean":
            return (totals.total / totals.nv if totals.nv else None), totals.nv
        return (sketch_quantile(totals.sketch or {}, PERCENTILES[agg]) if totals.nv else None), totals.nv

    def _breached(self, value: float) -> bool:
        p = self.params
        return value > p.above if p.above is not None else value < p.below  # type: ignore[operator]

    def _cleared(self, value: float) -> bool:
        p = self.params
        return value <= p.clear_at if p.above is not None else value >= p.clear_at

    def _threshold(self) -> Optional[float]:
        return self.params.threshold

    def _worst(self, a: float, b: float) -> float:
        return max(a, b) if self.params.above is not None else min(a, b)

    def _score(self, value: Optional[float]) -> Optional[float]:
        """How far past the threshold: value / threshold (above) or threshold / value (below)."""
        p = self.params
        if value is None:
            return None
        if p.above is not None:
            return value / p.above if p.above > 0 else None
        return p.below / value if value > 0 else None  # type: ignore[operator]

    def _fmt(self, value: Optional[float]) -> str:
        if value is None:
            return "n/a"
        if self.params.aggregate == "rate":
            return f"{value:.1%}"
        return f"{value:.4g}"

    def _describe(self, state: WindowState, value: Optional[float], action: str) -> str:
        p = self.params
        op = "above" if p.above is not None else "below"
        fields = dict(name=p.name, aggregate=p.aggregate, field=p.field or "", value=value,
                      threshold=p.threshold, op=op, window=window_label(p.window_s),
                      window_s=p.window_s, volume=state.volume, segment=segment_label(state.segment))
        if p.summary and value is not None:
            try:
                text = p.summary.format(**fields)
            except (ValueError, TypeError):
                text = ""
            if text:
                return text if action == "trigger" else f"resolved: {text}"
        what = f"{p.aggregate}({p.field})" if p.field else "rate(" + ", ".join(
            f"{k}={v}" for k, v in p.where.items()) + ")"
        if action == "trigger":
            return (f"{p.name}: {what} = {self._fmt(value)}, {op} {self._fmt(p.threshold)} over "
                    f"{window_label(p.window_s)} on {segment_label(state.segment)} "
                    f"({state.volume} events)")
        now = "no traffic in the window" if value is None else f"{what} = {self._fmt(value)}"
        return (f"{p.name} resolved: {now} on {segment_label(state.segment)} "
                f"(clears at {self._fmt(p.clear_at)})")

    # -- contract test ---------------------------------------------------------------------------
    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"field": "error_type", "aggregate": "rate", "group_by": ["app", "model"],
                "window_s": 300, "bucket_s": 60, "min_volume": 10, "above": 0.2, "clear": 0.1,
                "for_s": 60, "clear_for_s": 120, "runbook_url": "https://runbooks.example.com/errors"}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        t0 = 1_767_600_000.0  # 2026-01-05T08:00:00Z

        def ev(i: int, error: bool) -> dict:
            e = {"schema_version": "1", "event_id": f"thr-{i}", "run_id": f"run-{i}",
                 "ts": t0 + 10 * i, "app": "support-bot", "route": "chat", "model": "gpt-4o-mini",
                 "latency_s": 1.0 + (i % 7) * 0.1, "input_tokens": 500, "output_tokens": 100}
            if error:
                e["error_type"] = "rate_limited"
            return e

        normal = [ev(i, i % 20 == 0) for i in range(180)]  # 30 min at 5 % errors
        anomalous = [ev(i, i % 2 == 0) for i in range(180, 240)]  # 10 min at 50 %
        return normal, anomalous
