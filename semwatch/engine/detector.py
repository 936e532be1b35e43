"""The shape every detector and rule shares.

A detector is pure Python over events: no Kafka, no Faust, no I/O. It keeps all of its memory in
small plain-data state objects (:mod:`semwatch.engine.state`) that it asks the :class:`Context`
for, keyed by segment, so that the same detector runs in a Faust worker (state in a changelogged
table) and in offline replay (state in a dict) with identical results.

Life of one event: the engine calls ``observe(event, ctx)`` on every detector. A detector reads and
updates its segment state and, when its lifecycle says so, calls ``ctx.emit(...)``. Time-driven work
(resolving an incident in a segment whose traffic stopped) happens in ``advance(key, state,
watermark, ctx)``, which the engine calls for *active* segments (pending or firing) as event time
moves on.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from semwatch.contract import Incident, RunEvent, dedup_key_for, format_ts, incident_id_for
from semwatch.contract.redact import redact
from semwatch.engine.state import PlainState

if TYPE_CHECKING:  # pragma: no cover
    from semwatch.engine.changes import ChangeTracker

SEVERITY_ORDER = {"SEV-3": 0, "SEV-2": 1, "SEV-1": 2}


class DetectorParams(BaseModel):
    """Settings every detector and rule accepts; subclasses add their own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    type: str
    enabled: bool = True
    # Labels that scope one segment; every event field or metrics.* works.
    group_by: tuple[str, ...] = ("app", "route", "model", "prompt_version")
    severity: str = Field(default="SEV-2", pattern=r"^SEV-[123]$")
    runbook_url: Optional[str] = None
    # Bounded state: segments idle this long (event time) are forgotten; at most this many kept.
    idle_ttl_s: float = Field(default=6 * 3600, gt=0)
    max_segments: int = Field(default=20000, ge=1)

    @field_validator("group_by", mode="before")
    @classmethod
    def _group_by(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value


@dataclass(slots=True)
class SegmentState(PlainState):
    """Base of every detector's per-segment state: small plain data. Subclasses are registered with
    ``@state_type`` (:mod:`semwatch.engine.state`) so that the changelog can hold them."""

    segment: dict[str, str]
    last_seen: float = 0.0
    # True while the lifecycle is pending or firing: the engine then calls advance() on ticks.
    active: bool = False
    # The engine's key for this state (set by the engine; saves rebuilding it on every change).
    key: str = field(default="", repr=False, compare=False)


@dataclass
class Evidence:
    """Collects sample ids and redacted excerpts, bounded."""

    run_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    excerpts: list[str] = field(default_factory=list)
    limit: int = 5

    def add(self, event: RunEvent, excerpt_from_response: bool = True) -> None:
        if len(self.event_ids) >= self.limit:
            return
        if event.run_id not in self.run_ids:
            self.run_ids.append(event.run_id)
        self.event_ids.append(event.event_id)
        if excerpt_from_response and event.response_text:
            self.excerpts.append(redact(event.response_text, 120))

    def to_dict(self) -> dict[str, Any]:
        return {"run_ids": list(self.run_ids), "event_ids": list(self.event_ids),
                "excerpts": list(self.excerpts)}


class Context:
    """What a detector may touch while handling one event or tick: state, output, change history."""

    def __init__(self, store: "StateAccess", changes: "ChangeTracker", emit: Callable[[Incident], None]):
        self._store = store
        self.changes = changes
        self._emit = emit
        self.late = False  # the current event is later than the allowed lateness
        # The newest event time seen (during a tick: the watermark plus the allowed lateness), for
        # detectors that judge a pending breach "now" rather than at the lagging watermark.
        self.now = -math.inf
        # Results that detectors of the same event share (cleared by the engine before each
        # event): e.g. the wrong-entity scope check, computed once for both wrong-entity detectors.
        self.shared: dict = {}

    def state(self, detector: "Detector", segment: dict[str, str], factory: Callable[[], SegmentState],
              now: float) -> Optional[SegmentState]:
        """The segment's state (created on first use); None when the segment cap refuses a new one."""
        return self._store.get_or_create(detector, segment, factory, now)

    def get(self, detector: "Detector", segment: dict[str, str]) -> Optional[SegmentState]:
        return self._store.get(detector, segment)

    def drop(self, detector: "Detector", segment: dict[str, str]) -> None:
        self._store.drop(detector, segment)

    def changed(self, detector: "Detector", state: SegmentState) -> None:
        """Mark state as modified in place (so the worker writes it to the changelog)."""
        self._store.changed(detector, state)

    def emit(self, incident: Incident) -> None:
        self._emit(incident)


class StateAccess(ABC):
    """Implemented by the engine's state store."""

    @abstractmethod
    def get_or_create(self, detector, segment, factory, now): ...

    @abstractmethod
    def get(self, detector, segment): ...

    @abstractmethod
    def drop(self, detector, segment): ...

    @abstractmethod
    def changed(self, detector, state): ...


REGISTRY: dict[str, type["Detector"]] = {}


def register(cls: type["Detector"]) -> type["Detector"]:
    """Class decorator: makes a detector available to config files by its ``type_name``."""
    if cls.type_name in REGISTRY and REGISTRY[cls.type_name] is not cls:
        raise ValueError(f"detector type {cls.type_name!r} registered twice")
    REGISTRY[cls.type_name] = cls
    return cls


class Detector(ABC):
    """Base class of detectors and rules."""

    type_name: ClassVar[str]
    kind: ClassVar[str]
    Params: ClassVar[type[DetectorParams]] = DetectorParams
    # The knobs ``semwatch tune`` may move and the values to try ({param: list | Rel}), see
    # semwatch/engine/tuning.py. Empty: tune replays the configured setting only.
    tuning_space: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: DetectorParams, env: "DetectorEnv"):
        self.params = params
        self.env = env
        self.name = params.name

    # -- the interface -------------------------------------------------------------------------
    @abstractmethod
    def observe(self, event: RunEvent, ctx: Context) -> None:
        """Handle one event (score first, then learn)."""

    def advance(self, state: SegmentState, watermark: float, ctx: Context) -> None:  # noqa: B027
        """Event time moved on to ``watermark`` for an active segment (pending or firing).
        Optional: detectors without time-driven transitions do nothing here."""

    # -- helpers -------------------------------------------------------------------------------
    def segment_of(self, event: RunEvent) -> dict[str, str]:
        return {f: (event.segment_value(f) or "") for f in self.params.group_by}

    def incident(
        self,
        *,
        action: str,
        segment: dict[str, str],
        summary: str,
        window_start: float,
        window_end: float,
        detected_at: float,
        ctx: Context,
        severity: Optional[str] = None,
        observed: Optional[float] = None,
        baseline: Optional[float] = None,
        threshold: Optional[float] = None,
        score: Optional[float] = None,
        evidence: Optional[dict[str, Any]] = None,
        dedup_extra: str = "",
        kind: Optional[str] = None,
    ) -> Incident:
        """Build an incident record with the shared conventions (ids, times, changes, runbook)."""
        key = dedup_key_for(self.name, segment, dedup_extra)
        return Incident(
            incident_id=incident_id_for(key, action, detected_at),
            dedup_key=key,
            event_action=action,  # type: ignore[arg-type]
            severity=severity or self.params.severity,  # type: ignore[arg-type]
            kind=kind or self.kind,  # type: ignore[arg-type]
            detector=self.name,
            summary=summary,
            segment=dict(segment),
            observed=_finite(observed),
            baseline=_finite(baseline),
            threshold=_finite(threshold),
            score=_finite(score),
            window_start=format_ts(window_start),
            window_end=format_ts(window_end),
            detected_at=format_ts(detected_at),
            evidence=evidence or {},
            suspected_changes=ctx.changes.suspected(segment, before=window_start, now=detected_at)
            if action == "trigger" else [],
            containment=ctx.changes.containment(segment, window_start, detected_at)
            if action == "trigger" else None,
            runbook_url=self.params.runbook_url or self.env.default_runbook_url(self.kind),
        )

    def probe(self, segment: dict[str, str], window: dict) -> Any:
        """What ``semwatch tune`` plots for a labelled window: a
        :class:`semwatch.engine.tuning.SignalProbe`, or None when this type has no signal to show
        (raise :class:`semwatch.engine.tuning.ProbeUnavailable` to say why)."""
        return None

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Parameters for the shared contract test (tests/test_detector_contract.py)."""
        return {}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        """(normal events, anomalous events) as event dicts; the contract test checks that the
        anomalous tail raises a trigger and the normal head raises nothing."""
        raise NotImplementedError


@dataclass
class DetectorEnv:
    """Configuration shared by all detectors: tool/entity map, prices, runbook defaults."""

    tools: Any = None  # detectors.entities.ToolMap
    prices: Any = None  # semwatch.enrich.prices.PriceTable
    runbook_base_url: Optional[str] = None

    def default_runbook_url(self, kind: str) -> Optional[str]:
        if not self.runbook_base_url:
            return None
        return f"{self.runbook_base_url.rstrip('/')}/{kind}"


def severity_max(a: str, b: str) -> str:
    return a if SEVERITY_ORDER[a] >= SEVERITY_ORDER[b] else b


_ASCENDING_SEVERITIES = ("SEV-3", "SEV-2", "SEV-1")


def escalate(base: str, magnitude: float, steps: tuple[float, ...]) -> str:
    """``base`` raised one level for every step of ``steps`` that ``magnitude`` reaches.

    >>> escalate("SEV-3", 12.0, (10.0, 50.0))
    'SEV-2'
    """
    level = _ASCENDING_SEVERITIES.index(base) + sum(1 for s in steps if magnitude >= s)
    return _ASCENDING_SEVERITIES[min(level, len(_ASCENDING_SEVERITIES) - 1)]


def finite_or_none(x: Any) -> Optional[float]:
    """``x`` itself when it is a finite number, else None (JSON has no NaN or infinity)."""
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _finite(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def unit_event(event_id: str, run_id: str, ts: float, **fields: Any) -> dict:
    """An event dict for detectors' ``_unit_test_anomaly`` examples (app/route/model filled in)."""
    return {"schema_version": "1", "event_id": event_id, "run_id": run_id, "ts": ts,
            "app": "unit-app", "route": "unit-route", "model": "unit-model", **fields}
