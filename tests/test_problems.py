"""One page per problem: grouping incidents into problems, and no flapping (semwatch/engine/problems.py)."""

from __future__ import annotations

from detectors.rate_spike import RateSpike
from detectors.run_outlier import RunOutlier
from detectors.runaway_loop import RunawayLoop
from detectors.wrong_entity_action import WrongEntityAction, scope_runs
from detectors.wrong_entity_rate import WrongEntityRate
from semwatch.contract import Incident, RunEvent, format_ts
from semwatch.engine.core import Engine, EngineOptions
from semwatch.engine.detector import DetectorEnv
from semwatch.engine.problems import ProblemBook, ProblemTracker, related
from semwatch.engine.tools import ToolMap
from semwatch.offline.evaluate import _triggers, _windows, page_summary

T0 = 1_767_600_000.0


def incident(action: str, dedup: str, segment: dict, at: float, iid: str = "") -> Incident:
    return Incident(incident_id=iid or f"{dedup}-{action}-{at}", dedup_key=dedup, event_action=action,
                    severity="SEV-2", kind="token_spike", detector=dedup.split("/")[0], summary="s",
                    segment=segment, window_start=format_ts(at), window_end=format_ts(at),
                    detected_at=format_ts(at))


def tracker(window: float = 900.0, cooldown: float = 600.0) -> tuple[ProblemTracker, dict]:
    data: dict = {}
    return ProblemTracker(window, cooldown, data.get, data.__setitem__), data


def test_scopes_relate_when_one_contains_the_other_or_they_name_the_same_route():
    assert related({"app": "a"}, {"app": "a", "route": "r", "model": "m"})
    assert related({"app": "a", "route": "r", "model": "m1"}, {"app": "a", "route": "r", "prompt_version": "v2"})
    assert not related({"app": "a", "route": "r"}, {"app": "a", "route": "s"})
    assert not related({"app": "a"}, {"app": "b"})


def test_related_triggers_share_a_group_key_and_the_problem_resolves_with_its_last_member():
    tr, data = tracker(cooldown=0)
    out: list[Incident] = []
    tr.admit(incident("trigger", "loop/1", {"app": "a", "route": "r", "model": "m"}, T0), out.append)
    tr.admit(incident("trigger", "other/1", {"app": "a", "route": "s"}, T0 + 30), out.append)
    tr.admit(incident("trigger", "burn/1", {"app": "a"}, T0 + 60), out.append)  # app-wide: the oldest problem
    out = [out[0], out[2], out[1]]  # loop, burn, other
    assert out[0].group_key == out[1].group_key != out[2].group_key
    assert out[1].related == ["loop/1"] and out[0].related == []
    tr.admit(incident("resolve", "loop/1", {"app": "a", "route": "r", "model": "m"}, T0 + 300), out.append)
    book: ProblemBook = data["__problems__|a"]
    assert any(p[0] == out[0].group_key and p[2] == float("inf") for p in book.problems)  # burn still open
    tr.admit(incident("resolve", "burn/1", {"app": "a"}, T0 + 400), out.append)
    assert any(p[0] == out[0].group_key and p[2] == T0 + 400 for p in book.problems)
    assert out[-1].group_key == out[0].group_key and out[-1].related == ["loop/1"]


def test_a_trigger_within_the_cool_down_reopens_the_same_incident_and_its_resolve_never_goes_out():
    tr, _ = tracker(cooldown=600)
    out: list[Incident] = []
    seg = {"app": "a", "route": "r"}
    tr.admit(incident("trigger", "cost/1", seg, T0, iid="first"), out.append)
    tr.admit(incident("resolve", "cost/1", seg, T0 + 300), out.append)
    tr.release(lambda app: T0 + 500, out.append)  # not yet due
    tr.admit(incident("trigger", "cost/1", seg, T0 + 600, iid="second"), out.append)
    tr.release(lambda app: T0 + 5000, out.append)
    assert [(i.event_action, i.incident_id) for i in out] == [("trigger", "first"), ("trigger", "first")]
    tr.admit(incident("resolve", "cost/1", seg, T0 + 6000), out.append)
    tr.release(lambda app: T0 + 6599, out.append)
    assert len(out) == 2
    tr.release(lambda app: T0 + 6600, out.append)
    assert [i.event_action for i in out] == ["trigger", "trigger", "resolve"]


def _pages(incidents: list[Incident], label: dict) -> dict:
    return page_summary(_triggers(incidents), _windows([label]), None, 120.0, 900.0)


def test_a_twenty_minute_wrong_entity_incident_is_one_page():
    """12 runs acting on other customers' orders in 20 minutes, on one route: today 12
    wrong-entity-action triggers and a wrong-entity-rate trigger, 13 pages; now one."""
    env = DetectorEnv(tools=ToolMap(), runbook_base_url="https://runbooks.test")
    action = WrongEntityAction(WrongEntityAction.Params.model_validate(
        {"name": "wrong-entity-action", "type": "wrong_entity_action"}), env)
    rate = WrongEntityRate(WrongEntityRate.Params.model_validate(
        {"name": "wrong-entity-rate", "type": "wrong_entity_rate", "window_s": 900, "bucket_s": 60,
         "min_volume": 10, "above": 0.05, "clear": 0.02}), env)
    eng = Engine([action, rate], EngineOptions(resolve_cooldown_s=600))
    events = [RunEvent.model_validate(e) for e in scope_runs(60, wrong_every=0)]
    bad = [RunEvent.model_validate(e) for e in scope_runs(24, wrong_every=2, offset=60)]  # 12 wrong, 20 min
    out = []
    for e in events + bad:
        out.extend(eng.process(e))
    out.extend(eng.advance_to(bad[-1].ts + 7200))
    detectors = {i.detector for i in out if i.event_action == "trigger"}
    assert detectors == {"wrong-entity-action", "wrong-entity-rate"}
    label = {"kind": "wrong_entity_action", "start": bad[0].ts, "end": bad[-1].ts,
             "segment": {"app": "order-agent", "route": "refunds"}}
    pages = _pages(out, label)
    assert pages["pages"] == 1 and pages["pages_per_incident"] == 1.0


def test_one_runaway_loop_is_one_page_whatever_sees_it():
    """A looping run seen by runaway-loop (absolute caps) and run-tokens (robust outlier): one page."""
    env = DetectorEnv()
    loop = RunawayLoop(RunawayLoop.Params.model_validate({**RunawayLoop._unit_test_params()}), env)
    outlier = RunOutlier(RunOutlier.Params.model_validate({**RunOutlier._unit_test_params()}), env)
    eng = Engine([loop, outlier], EngineOptions(resolve_cooldown_s=600))
    normal, anomalous = RunOutlier._unit_test_anomaly()
    out = []
    for e in [RunEvent.model_validate(x) for x in normal + anomalous]:
        out.extend(eng.process(e))
    out.extend(eng.advance_to(anomalous[-1]["ts"] + 7200))
    assert {i.detector for i in out if i.event_action == "trigger"} == {"runaway-test", "run-tokens-test"}
    label = {"kind": "token_spike", "start": anomalous[0]["ts"], "end": anomalous[-1]["ts"],
             "segment": {"app": "unit-app", "route": "unit-route"}}
    assert _pages(out, label)["pages"] == 1


def test_a_flapping_cost_spike_pages_once():
    """A pricier model on a route, then cheap again for a few minutes, then pricier again: the
    detector resolves and re-triggers; the cool-down keeps it one incident, one page."""
    params = RateSpike.Params.model_validate({**RateSpike._unit_test_params(), "clear_for_s": 60})
    eng = Engine([RateSpike(params, DetectorEnv())], EngineOptions(resolve_cooldown_s=600))
    normal, _ = RateSpike._unit_test_anomaly()
    t1 = normal[-1]["ts"] + 5
    costs = [0.02] * 60 + [0.0012] * 40 + [0.02] * 60  # 5 min expensive, 3 min cheap, 5 min expensive
    spike = [{**normal[0], "event_id": f"s{i}", "run_id": f"rs{i}", "ts": t1 + 5 * i, "cost_usd": c}
             for i, c in enumerate(costs)]
    out = []
    for e in [RunEvent.model_validate(x) for x in normal + spike]:
        out.extend(eng.process(e))
    out.extend(eng.advance_to(spike[-1]["ts"] + 7200))
    triggers = [i for i in out if i.event_action == "trigger"]
    assert len(triggers) >= 2, [i.summary for i in out]  # the detector did flap ...
    assert len({i.incident_id for i in triggers}) == 1  # ... into one incident
    assert [i.event_action for i in out].count("resolve") == 1
    label = {"kind": "cost_spike", "start": t1, "end": spike[-1]["ts"], "segment": {"app": "unit-app"}}
    assert _pages(out, label)["pages"] == 1
