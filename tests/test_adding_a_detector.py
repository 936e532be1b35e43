"""A new detector type is one file plus a config entry: this file is that file (docs/adding-a-detector.md).

``truncated_streak`` fires when a segment's responses are cut off (``finish_reason: length``) many
times in a row, and resolves at the first complete response. It is deliberately small; what matters
is that nothing outside this file names it, yet config, replay, tune and the shared contract test
all take it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from pydantic import Field

from semwatch.config import load_config
from semwatch.contract import RunEvent
from semwatch.engine.detector import Context, Detector, DetectorParams, SegmentState, register, unit_event
from semwatch.engine.lifecycle import Lifecycle
from semwatch.engine.state import state_type
from semwatch.engine.tuning import Point, SignalProbe
from semwatch.offline.replay import replay_events
from semwatch.offline.tune import tune
from tests import test_detector_contract as contract


# -- the detector: parameters, state, logic, tuning space, contract-test hooks -----------------------
class TruncatedStreakParams(DetectorParams):
    type: str = "truncated_streak"
    group_by: tuple[str, ...] = ("app", "route")
    severity: str = Field(default="SEV-3", pattern=r"^SEV-[123]$")
    # Truncated responses in a row before the trigger: raising it pages later and less often.
    min_streak: int = Field(default=5, ge=2)


@state_type("truncated_streak_segment")
@dataclass(slots=True)
class TruncatedStreakState(SegmentState):
    streak: int = 0
    first_event: Optional[str] = None
    lc: Lifecycle = field(default_factory=Lifecycle)


@register
class TruncatedStreak(Detector):
    type_name = "truncated_streak"
    kind = "token_spike"
    Params = TruncatedStreakParams
    tuning_space = {"min_streak": [3, 5, 8]}
    params: TruncatedStreakParams

    def observe(self, event: RunEvent, ctx: Context) -> None:
        if event.finish_reason is None:
            return
        segment = self.segment_of(event)
        st = ctx.state(self, segment, lambda: TruncatedStreakState(segment={}), event.ts)
        if st is None:
            return
        if event.finish_reason == "length":
            st.streak += 1
            st.first_event = st.first_event or event.event_id
            if st.streak >= self.params.min_streak and st.lc.status == "ok":
                st.lc.status, st.lc.fired_at, st.active = "firing", event.ts, True
                self._emit("trigger", st, event.ts, ctx)
        else:
            if st.lc.status == "firing":
                st.lc.status, st.active = "ok", False
                self._emit("resolve", st, event.ts, ctx)
            st.streak, st.first_event = 0, None
        ctx.changed(self, st)

    def _emit(self, action: str, st: TruncatedStreakState, now: float, ctx: Context) -> None:
        ctx.emit(self.incident(
            action=action, segment=st.segment, ctx=ctx, window_start=st.lc.fired_at, window_end=now,
            detected_at=now, observed=st.streak, threshold=self.params.min_streak,
            summary=f"{st.streak} truncated responses in a row on {'/'.join(st.segment.values())}",
            evidence={"event_ids": [st.first_event] if st.first_event else []}))

    def probe(self, segment: dict[str, str], window: dict) -> SignalProbe:
        def read(engine: Any, event: RunEvent) -> Optional[Point]:
            st = engine.get(self, segment)
            return None if st is None else (event.ts, st.streak, None, self.params.min_streak, None)

        return SignalProbe("truncated responses in a row", read, "min_streak")

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"min_streak": 4}

    @classmethod
    def _unit_test_anomaly(cls) -> tuple[list[dict], list[dict]]:
        t0 = 1_767_600_000.0
        normal = [unit_event(f"n{i}", f"r{i}", t0 + 10 * i, finish_reason="length" if i % 3 == 0 else "stop")
                  for i in range(200)]
        anomalous = [unit_event(f"a{i}", f"ra{i}", t0 + 2000 + 10 * i, finish_reason="length")
                     for i in range(10)]
        return normal, anomalous


# -- it runs through everything, untouched ---------------------------------------------------------------
@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "semwatch.yaml").write_text(yaml.safe_dump({"detectors": [
        {"name": "truncated-streak", "type": "truncated_streak", "min_streak": 4}]}))
    return tmp_path


def _events() -> tuple[list[RunEvent], list[dict]]:
    normal, anomalous = TruncatedStreak._unit_test_anomaly()
    events = [RunEvent.model_validate(e) for e in normal + anomalous]
    label = {"kind": "token_spike", "start": anomalous[0]["ts"], "end": anomalous[-1]["ts"],
             "segment": {"app": "unit-app", "route": "unit-route"}}
    return events, [label]


def test_config_replay_and_tune_take_a_detector_defined_in_one_file(config_dir):
    config = load_config(config_dir)
    assert [p.type for p in config.detector_params] == ["truncated_streak"]
    events, labels = _events()
    incidents = replay_events(events, config).incidents
    # The 4th truncated response in a row triggers; the recording ends before a complete one.
    assert [(i.event_action, i.kind, i.observed) for i in incidents] == [("trigger", "token_spike", 4.0)]
    result = tune(events, config, labels, budget=5.0, jobs=1, progress=False, timelines=True)
    sweep = result.sweeps[0]
    assert [c.params.min_streak for c in sweep.candidates] == [4, 3, 5, 8]  # configured first
    assert sweep.chosen is not None and sweep.chosen.row.recall == 1.0


@pytest.mark.parametrize("check", contract.CHECKS, ids=lambda c: c.__name__)
def test_it_keeps_the_shared_detector_contract(check):
    check(TruncatedStreak)
