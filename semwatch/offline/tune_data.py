"""What ``semwatch tune`` measures: candidates, one sweep per detector, the whole result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from semwatch.engine.detector import DetectorParams
from semwatch.offline.evaluate import (
    EvaluationReport,
    Row,
)


# -- data ------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    detector: str
    index: int
    update: dict[str, Any]
    params: DetectorParams
    label: str
    configured: bool
    incidents: list[dict] = field(default_factory=list)
    row: Optional[Row] = None
    triggers: int = 0
    alerts_per_day: Optional[float] = None
    seconds: float = 0.0
    marked: int = 0  # triggers an on-call marked as false alarms (--feedback)

    @property
    def fa_per_day(self) -> float:
        if self.row is not None and self.row.false_alarms_per_day is not None:
            return self.row.false_alarms_per_day
        return self.alerts_per_day or 0.0


@dataclass
class DetectorSweep:
    name: str
    type: str
    kind: str
    configured: DetectorParams
    candidates: list[Candidate]
    windows: int = 0
    chosen: Optional[Candidate] = None
    within_budget: Optional[bool] = None
    note: str = ""
    unknown_space: list[str] = field(default_factory=list)
    skipped: int = 0  # settings not replayed (configured within budget, no labelled window)
    timeline: Optional[dict] = None  # {"incidents": [...], "series": [...]} with the chosen setting


@dataclass
class TuneResult:
    sweeps: list[DetectorSweep]
    events: int
    rejected: int
    first_ts: Optional[float]
    last_ts: Optional[float]
    days: Optional[float]
    labels: Optional[list[dict]]
    budget: Optional[float]
    slack_before_s: float
    slack_after_s: float
    a_fp: float
    jobs: int
    seconds: dict[str, float] = field(default_factory=dict)
    combined: Optional[EvaluationReport] = None  # chosen settings, union of their runs
    configured_combined: Optional[EvaluationReport] = None  # configured settings, same data
    picked: bool = False  # a tuned setting was picked (labels, or --pick-by-volume)
    marks: int = 0  # on-call false-alarm marks taken into account (--feedback)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def chosen_params(self) -> dict[str, DetectorParams]:
        return {s.name: s.chosen.params for s in self.sweeps if s.chosen is not None}

    def warnings(self) -> list[str]:
        return [f"{s.name}: {s.note}" for s in self.sweeps if s.within_budget is False]


def nab_of(c: Candidate, missing: float = -1e9) -> float:
    """The candidate's NAB score (``missing`` when it was not scored against labels)."""
    score = c.row.nab_score if c.row is not None else None
    return missing if score is None else score
