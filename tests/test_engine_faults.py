"""A detector that raises, or state restored out of step, must not stop the engine."""

from __future__ import annotations

import logging
import math

from detectors.wrong_entity_action import WrongEntityAction, WrongEntityParams
from semwatch.contract import RunEvent
from semwatch.engine.baselines import SampleRing
from semwatch.engine.core import Engine
from semwatch.engine.detector import Detector, DetectorEnv, DetectorParams

T0 = 1_767_600_000.0


class Exploding(Detector):
    type_name = "exploding-test"
    kind = "threshold"

    def observe(self, event, ctx):
        if event.event_id.endswith("7"):
            raise ZeroDivisionError("a detector bug")


def _event(i: int, wrong: bool = False) -> RunEvent:
    run = f"run-{i // 2}"
    raw = {"schema_version": "1", "event_id": f"e{i}", "run_id": run, "ts": T0 + i, "app": "shop",
           "route": "refunds", "model": "m"}
    if i % 2 == 0:
        raw["subject"] = {"order_id": [f"#W{i}"]}
    else:
        raw["tool_calls"] = [{"name": "refund_order", "side_effect": True,
                              "arguments": {"order_id": "#W-stranger" if wrong else f"#W{i - 1}"}}]
    return RunEvent.model_validate(raw)


def test_a_failing_detector_skips_its_event_and_the_others_go_on(caplog):
    env = DetectorEnv()
    boom = Exploding(DetectorParams(name="boom", type="exploding-test"), env)
    wrong = WrongEntityAction(WrongEntityParams(name="wrong-entity-action"), env)
    engine = Engine([boom, wrong])
    incidents = []
    with caplog.at_level(logging.ERROR, logger="semwatch.engine"):
        for i in range(40):
            incidents += engine.process(_event(i, wrong=(i == 37)))
    assert engine.stats.detector_errors == {"boom": 4}  # e7, e17, e27, e37
    # The event the first detector failed on still reached the second one.
    assert [inc.evidence["run_ids"] for inc in incidents] == [["run-18"]]
    logged = [r for r in caplog.records if "detector boom failed" in r.getMessage()]
    assert len(logged) == 3  # the 1st, 2nd and 4th failure: a flood stays readable
    assert logged[0].exc_info is not None


def test_a_ticket_the_ring_never_handed_out_owns_nothing():
    # The run's state was written to the changelog, the ring's (newer claim) was not: after a
    # crash the run asks a ring that never gave out its ticket.
    ring = SampleRing.empty(8)
    for t in range(3):
        ring.claim(float(t), 0)
    assert ring.owns(2) and not ring.owns(3) and not ring.owns(5)
    ring.write(5, 1.0, 10.0)  # ignored, not an IndexError
    ring.forget(5)
    assert len(ring.values) == 3 and all(math.isnan(v) for v in ring.values)
