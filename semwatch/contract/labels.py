"""Labelled incident windows for ``generate``, ``evaluate`` and ``tune`` (JSON Lines)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from semwatch.contract.incidents import KIND_PATTERN
from semwatch.contract.times import parse_ts


def is_optional(label: Any) -> bool:
    """A labelled window marked ``"optional": true``: a real but minor condition that evaluation
    neither requires nor counts as a false alarm (see semwatch/offline/evaluate.py).

    >>> is_optional({"kind": "threshold", "optional": True}), is_optional({"kind": "threshold"})
    (True, False)
    """
    return label.get("optional") is True


class LabelledWindow(BaseModel):
    """A labelled incident window for generate / evaluate / tune."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(pattern=KIND_PATTERN)
    start: float
    end: float
    segment: dict[str, str] = Field(default_factory=dict)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> float:
        return parse_ts(value)
