"""``grounding_drop``: a segment's answers are less grounded in their sources than they usually are.

Retrieval-augmented and research agents are scored by an evaluator — groundedness, citation
accuracy — per answer (``metrics.groundedness``, ``metrics.citation_score``; OpenTelemetry
``gen_ai.evaluation.result`` events arrive there too, see :mod:`semwatch.ingest.otlp_evaluations`).
After a retrieval change (an index rebuilt with the wrong chunking, a reranker switched off) the
answers still come, fluent and on time, but cite what does not support them.

Every segment has its own normal range of scores (one evaluator's 0.9 is another's 0.6), so there
is no fixed threshold. The segment's **low line** is ``median - low_z x robust sd`` of a ring of its
recent scores (median and MAD, :class:`semwatch.engine.baselines.SampleRing`, learnt only while no
drop is in progress), and at least ``min_drop`` below the median. An answer is a hit when its score
is below the line; normally a few percent are. The share of hits is judged by the sequential share
test of :mod:`semwatch.engine.share` against the segment's own learnt share: a drop of the whole
distribution by one robust sd multiplies the share below a two-sd line by about seven, and the test
sees it within tens of answers on a busy route. The incident gives the usual and the recent median.

>>> p = GroundingDropParams(name="g")
>>> p.fields, p.low_z
(('metrics.groundedness', 'metrics.citation_score'), 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pydantic import Field

from semwatch.contract import RunEvent
from semwatch.engine.baselines import SampleRing
from semwatch.engine.detector import Context, register, unit_event
from semwatch.engine.share import NormRingParams, ShareSpikeDetector, ShareState
from semwatch.engine.state import state_type


class GroundingDropParams(NormRingParams):
    type: str = "grounding_drop"
    group_by: tuple[str, ...] = ("app", "route")
    severity: str = Field(default="SEV-2", pattern=r"^SEV-[123]$")
    # The score watched: the first of these an event carries (higher = better grounded).
    fields: tuple[str, ...] = ("metrics.groundedness", "metrics.citation_score")
    # The low line: low_z robust sd below the segment's median ... (raise: fewer hits, later pages)
    low_z: float = Field(default=2.0, gt=0)
    # ... and at least min_drop below it (evaluators report coarse scores: 0.8, 0.9, 1.0).
    min_drop: float = Field(default=0.05, ge=0)
    # Floor of the robust sd (a segment whose scores are all 1.0 has a MAD of 0).
    min_scale: float = Field(default=0.02, gt=0)
    sample_every_s: float = Field(default=0.0, ge=0)  # every score joins the norm (scores are sparse)
    # Material: the share below the line must rise by 10 points and to 2 x the baseline.
    min_increase: float = Field(default=0.10, gt=0, lt=1)
    min_ratio: float = Field(default=2.0, ge=1)
    prior_rate: float = Field(default=0.04, gt=0, lt=1)


@state_type("grounding_drop")
@dataclass(slots=True)
class GroundingState(ShareState):
    ring: Optional[SampleRing] = None
    low_sum: float = 0.0  # sum and count of the scores since the drop began, for the summary
    low_n: int = 0


@register
class GroundingDrop(ShareSpikeDetector):
    """A rise in the share of a segment's answers scored below its own low line of groundedness."""

    type_name = "grounding_drop"
    kind = "grounding_drop"
    Params = GroundingDropParams
    params: GroundingDropParams
    what = "below the usual grounding"
    unit = "scored answers"
    tuning_space = {"low_z": [1.5, 2.0, 3.0], "min_increase": [0.05, 0.10, 0.20],
                    "false_alarm_days": [30.0, 90.0, 365.0]}

    def _new_state(self) -> GroundingState:
        return GroundingState(segment={}, ring=SampleRing.empty(self.params.ring_size))

    def score(self, event: RunEvent) -> Optional[tuple[str, float]]:
        for name in self.params.fields:
            value = event.numeric(name)
            if value is not None:
                return name, value
        return None

    def low_line(self, ring: SampleRing) -> Optional[float]:
        p = self.params
        if ring.count < p.min_samples or ring.median != ring.median:
            return None
        return ring.median - max(p.low_z * ring.scale, p.min_drop)

    def hit(self, event: RunEvent, st: ShareState, ctx: Context) -> Optional[bool]:
        found = self.score(event)
        if found is None:
            return None
        assert isinstance(st, GroundingState)
        p = self.params
        value = found[1]
        ring = st.ring
        if ring is None:
            ring = st.ring = SampleRing.empty(p.ring_size)
        if ring.due(event.ts, p.refresh_s, 1):
            ring.refresh(event.ts, event.ts, p.min_scale)
        line = self.low_line(ring)
        learning = self.learning(st)
        if learning:
            # Every score while nothing is going on, the low ones too: a norm that never sees its
            # own tail would creep upwards.
            ring.add(value, event.ts, p.sample_every_s)
            st.low_sum, st.low_n = 0.0, 0
        st.low_sum += value
        st.low_n += 1
        return None if line is None else value < line

    def detail(self, event: RunEvent, st: ShareState) -> str:
        found = self.score(event)
        return "" if found is None else f"{found[0]}={found[1]:.3g}"

    def describe(self, st: ShareState, rate: float, p0: float, action: str) -> str:
        text = super().describe(st, rate, p0, action)
        ring = getattr(st, "ring", None)
        if action == "trigger" and ring is not None and ring.median == ring.median and st.low_n:
            text += (f"; mean score {st.low_sum / st.low_n:.2f} since the drop began, usual median "
                     f"{ring.median:.2f}, low line {self.low_line(ring) or 0.0:.2f}")
        return text

    def extra_evidence(self, st: ShareState) -> dict[str, Any]:
        ring = getattr(st, "ring", None)
        if ring is None or ring.median != ring.median:
            return {}
        return {"usual_median": round(ring.median, 4), "low_line": round(self.low_line(ring) or 0.0, 4),
                "mean_since_onset": round(st.low_sum / st.low_n, 4) if st.low_n else None}

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"min_baseline_n": 100, "min_samples": 30}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        """Two hours of answers scored 0.75-0.95, then scores that sink to 0.45-0.75."""
        t0 = 1_767_600_000.0
        normal = [unit_event(f"n{i}", f"r{i}", t0 + 5.0 * i, conversation_id=f"c{i % 89}",
                             metrics={"groundedness": 0.75 + 0.2 * ((i * 37) % 101) / 100})
                  for i in range(1440)]
        anomalous = [unit_event(f"a{i}", f"ra{i}", t0 + 7200 + 5.0 * i, conversation_id=f"ca{i}",
                                metrics={"groundedness": 0.45 + 0.3 * ((i * 37) % 101) / 100})
                     for i in range(120)]
        return normal, anomalous
