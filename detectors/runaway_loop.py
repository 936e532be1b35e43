"""``runaway_loop``: an agent run that loops, however the segment's baseline looks.

The ``run_outlier`` machinery with absolute caps: more than ``max_steps`` steps, more than
``max_repeated_calls`` exact repeats of the run's own earlier tool calls (name + arguments), or more
than ``max_value`` tokens in one run. And, relative to the segment (``adaptive_repeats``): at least
``min_repeats`` exact repeats and ``repeats_ratio`` times the second most repetitive other run of
the segment's recent runs, in all or net of new calls. Where runs normally never repeat a call (an
order agent), five repeats are a loop within seconds; where they do (a research agent re-running
searches), the absolute cap decides.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from detectors.run_outlier import RunOutlier, RunOutlierParams
from semwatch.engine.detector import register
from semwatch.engine.tuning import Point, Rel, SignalProbe


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
    # Absolute caps: steps per run and repeats of one tool call (normal agents: <= ~34 steps).
    tuning_space = {"max_steps": Rel(0.8, 1.0, 1.25, 1.6), "max_repeated_calls": Rel(0.5, 1.0, 1.5)}
    kind = "token_spike"
    Params = RunawayLoopParams

    def probe(self, segment: dict[str, str], window: dict) -> SignalProbe:
        probe = super().probe(segment, window)
        p = self.params
        probe.signal = f"steps of the labelled run / max_steps ({p.max_steps})"
        probe.threshold_label = "limit"
        if p.max_repeated_calls:
            probe.signal2 = f"repeated tool calls / max_repeated_calls ({p.max_repeated_calls})"
        return probe

    def _probe_point(self, engine, segment: dict[str, str], event: Any, run: Any) -> Point:
        p = self.params
        steps = run.steps / p.max_steps if p.max_steps else None
        reps = run.repeats / p.max_repeated_calls if p.max_repeated_calls else None
        return (event.ts, steps, None, 1.0, reps)

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"name": "runaway-test", "type": cls.type_name, "max_steps": 20}
