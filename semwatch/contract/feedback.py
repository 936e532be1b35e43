"""On-call feedback about incidents: a false-alarm mark (JSON on ``semwatch.feedback``, key = ``dedup_key``).

Written by ``semwatch mark-false-alarm``; read by the worker (``semwatch_false_alarms_total{detector}``)
and by ``semwatch tune --feedback`` (a marked trigger is a false alarm of its detector there, whatever
the labels say). ``detector`` defaults to the part of the ``dedup_key`` before its first ``/``
(dedup keys are ``<detector>/<segment digest>``).

>>> mark = FalseAlarmMark(dedup_key="complaint-cluster/0a1b2c3d4e5f6a7b", marked_at="2026-01-05T10:00:00Z")
>>> (mark.detector, mark.type)
('complaint-cluster', 'false_alarm')
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from semwatch.contract.times import parse_ts


class FalseAlarmMark(BaseModel):
    """One incident (or one ongoing problem, without ``incident_id``) judged a false alarm."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal["1"] = "1"
    type: Literal["false_alarm"] = "false_alarm"
    dedup_key: str = Field(min_length=3, max_length=256, pattern=r"^[A-Za-z0-9_.\-]+/")
    incident_id: Optional[str] = Field(default=None, max_length=64)
    detector: str = Field(default="", max_length=64)
    # When the marked trigger was detected (event time), if the marker knows: lets tune find it.
    detected_at: Optional[str] = None
    reason: Optional[str] = Field(default=None, max_length=500)
    marked_by: Optional[str] = Field(default=None, max_length=128)
    marked_at: str

    @model_validator(mode="after")
    def _detector_from_key(self) -> "FalseAlarmMark":
        if not self.detector:
            object.__setattr__(self, "detector", self.dedup_key.split("/", 1)[0])
        for name in ("detected_at", "marked_at"):
            value = getattr(self, name)
            if value is not None:
                parse_ts(value)  # a time that does not parse is refused here, not in tune
        return self
