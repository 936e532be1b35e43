"""``wrong_entity_rate``: the share of a segment's side-effecting calls that act out of scope.

The share of checked side-effecting calls that are out of scope per segment over a sliding
event-time window, with the shared lifecycle (``for_s``, ``clear`` hysteresis, ``min_volume``): a
prompt or routing change that makes an agent systematically act on the wrong entities. Scope is
checked as ``wrong_entity_action`` checks it (:class:`detectors.wrong_entity_action.RunScopeMixin`),
and the result is shared with it within one event when both are configured alike.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from pydantic import Field, ValidationInfo, field_validator

from detectors.wrong_entity_action import RunScopeMixin, RunScopeParams, RunState, run_segment, scope_runs
from semwatch.contract import RunEvent
from semwatch.engine.detector import Context, DetectorParams, SegmentState, register
from semwatch.engine.formatting import segment_label, window_label
from semwatch.engine.tools import ToolMap
from semwatch.engine.tuning import Rel
from semwatch.engine.windows import Bucket, WindowedDetector, WindowParams, WindowState


class WrongEntityRateParams(RunScopeParams, WindowParams):
    type: str = "wrong_entity_rate"
    group_by: tuple[str, ...] = ("app", "route")
    severity: str = Field(default="SEV-1", pattern=r"^SEV-[123]$")
    idle_ttl_s: float = Field(default=3600.0, gt=0)
    max_segments: int = Field(default=100000, ge=1)
    window_s: float = Field(default=900.0, gt=0, le=7 * 86400)
    min_volume: int = Field(default=20, ge=0)
    clear_for_s: float = Field(default=600.0, ge=0)
    above: float = Field(default=0.05, ge=0, le=1)
    clear: Optional[float] = Field(default=None, ge=0, le=1)

    @field_validator("clear")
    @classmethod
    def _clear_below(cls, value: Optional[float], info: ValidationInfo) -> Optional[float]:
        above = info.data.get("above")
        if value is not None and above is not None and value > above:
            raise ValueError(f"clear ({value:g}) must be at or below above ({above:g})")
        return value


@register
class WrongEntityRate(RunScopeMixin, WindowedDetector):
    """Share of checked side-effecting calls that are out of scope, per segment and window."""

    type_name: ClassVar[str] = "wrong_entity_rate"
    tuning_space: ClassVar[dict[str, Any]] = {"above": Rel(0.4, 1.0, 2.0), "min_volume": [5, 20]}
    kind: ClassVar[str] = "wrong_entity_action"
    Params: ClassVar[type[DetectorParams]] = WrongEntityRateParams
    params: WrongEntityRateParams

    def __init__(self, params: WrongEntityRateParams, env: Any):
        super().__init__(params, env)
        self.tools = env.tools if isinstance(env.tools, ToolMap) else ToolMap()

    def observe(self, event: RunEvent, ctx: Context) -> None:
        if not event.tool_calls and not event.subject:
            return
        checks = ctx.shared.get(self._scope_key())
        if checks is None:  # no wrong_entity_action before this one (or other scope settings)
            run = ctx.state(self, run_segment(event), lambda: RunState(segment={}), event.ts)
            if run is None:
                return
            checks = self._check_event(run, event)  # type: ignore[arg-type]
            ctx.changed(self, run)
        checked = [c for c in checks if c.checked]
        if not checked:
            return
        state = ctx.state(self, self.segment_of(event), self._new_state, event.ts)
        if state is None:
            return
        bucket = self._bucket(state, event.ts, ctx)  # type: ignore[arg-type]
        if bucket is None:
            return
        bad = sum(1 for c in checked if c.offending)
        bucket.n += len(checked)
        bucket.hits += bad
        if bad:
            self._sample(bucket, event)

    def advance(self, state: SegmentState, watermark: float, ctx: Context) -> None:
        if isinstance(state, RunState):
            state.active = False
            ctx.changed(self, state)
            return
        super().advance(state, watermark, ctx)

    def _evaluate(self, totals: Bucket) -> tuple[Optional[float], int]:
        return (totals.hits / totals.n if totals.n else None), totals.n

    def _breached(self, value: float) -> bool:
        return value > self.params.above

    def _cleared(self, value: float) -> bool:
        clear = self.params.clear if self.params.clear is not None else self.params.above
        return value <= clear

    def _threshold(self) -> Optional[float]:
        return self.params.above

    def _score(self, value: Optional[float]) -> Optional[float]:
        if value is None or self.params.above <= 0:
            return None
        return value / self.params.above

    def _describe(self, state: WindowState, value: Optional[float], action: str) -> str:
        seg = segment_label(state.segment)
        if action == "trigger":
            return (f"{value:.1%} of side-effecting tool calls acted on entities outside their run's "
                    f"subject on {seg} over {window_label(self.params.window_s)} "
                    f"({state.volume} checked calls; threshold {self.params.above:.1%})")
        now = "no checked calls in the window" if value is None else f"{value:.1%} out of scope"
        return f"wrong-entity rate back to normal on {seg}: {now}"

    # -- contract test ---------------------------------------------------------------------------
    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window_s": 600, "bucket_s": 60, "min_volume": 5, "above": 0.2, "clear": 0.1,
                "clear_for_s": 120}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        return scope_runs(60, wrong_every=0), scope_runs(30, wrong_every=2, offset=60)
