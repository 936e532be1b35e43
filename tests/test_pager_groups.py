"""One page per problem: incidents sharing a ``group_key`` are one PagerDuty incident (one
dedup_key; the first trigger opens it, later ones update it with the highest open severity, the
resolve goes out when the last open incident resolves), and stay separate Alertmanager alerts
labelled with the group. Without a broker, against the recording HTTP server (tests/support.py)."""

from __future__ import annotations

import asyncio

from support import AM_PATH, PD_PATH, Receiver
from test_pager import FAST, incident, pages

from sinks.pager.alertmanager import AlertmanagerTarget
from sinks.pager.delivery import HttpSender
from sinks.pager.dispatch import Pager
from sinks.pager.ledger import MemoryLedger
from sinks.pager.metrics import PagerMetrics
from sinks.pager.pagerduty import PagerDutyTarget

GROUP = "problem/support-bot/2026-01-05T10"
MEMBERS = {"refusal/a": "SEV-3", "cost/b": "SEV-1", "tokens/c": "SEV-2"}


def member(key: str, action: str = "trigger", **over):
    fields = dict(dedup_key=key, incident_id=f"{key}/{action}", severity=MEMBERS[key], group_key=GROUP,
                  related=[k for k in MEMBERS if k != key])
    return incident(action, **{**fields, **over})


def build(receiver: Receiver, ledger: MemoryLedger, metrics: PagerMetrics) -> tuple[Pager, HttpSender]:
    sender = HttpSender(metrics, FAST)
    return Pager([AlertmanagerTarget(receiver.url, sender), PagerDutyTarget(receiver.url, "K", sender)],
                 metrics, ledger=ledger), sender


def run_all(pager: Pager, records) -> list[dict[str, str]]:
    async def go():
        return [await pager.handle(r) for r in records]
    return asyncio.run(go())


def test_three_incidents_of_one_problem_page_once(receiver, metrics):
    pager, sender = build(receiver, MemoryLedger(), metrics)
    try:
        triggers = run_all(pager, [member(k) for k in MEMBERS])
        first_resolves = run_all(pager, [member("cost/b", "resolve"), member("refusal/a", "resolve")])
        assert receiver.bodies(PD_PATH)[-1]["event_action"] == "trigger"  # still open at PagerDuty
        last = run_all(pager, [member("tokens/c", "resolve")])
    finally:
        sender.close()
    assert all(o == {"alertmanager": "delivered", "pagerduty": "delivered"} for o in triggers + last)
    assert first_resolves == [{"alertmanager": "delivered", "pagerduty": "grouped"}] * 2

    events = receiver.bodies(PD_PATH)
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [
        ("trigger", GROUP), ("trigger", GROUP), ("trigger", GROUP), ("resolve", GROUP)]
    # The first opens the incident; later triggers update it: highest open severity, details.
    assert [e["payload"]["severity"] for e in events[:3]] == ["warning", "critical", "critical"]
    assert events[0]["payload"]["summary"] == member("refusal/a").summary
    assert events[2]["payload"]["summary"].startswith("[3 incidents] ")
    details = events[2]["payload"]["custom_details"]
    assert details["group_key"] == GROUP and details["dedup_key"] == "tokens/c"
    assert details["open_incidents"] == sorted(MEMBERS) and details["related"] == ["refusal/a", "cost/b"]
    assert pages(metrics, "pagerduty", "resolve", "grouped") == 2

    # Alertmanager: every incident its own alert, all labelled with the problem.
    alerts = [a for body in receiver.bodies(AM_PATH) for a in body]
    assert [a["labels"]["dedup_key"] for a in alerts] == [*MEMBERS, "cost/b", "refusal/a", "tokens/c"]
    assert {a["labels"]["group_key"] for a in alerts} == {GROUP}
    assert alerts[0]["annotations"]["related"] == "cost/b, tokens/c"


def test_a_restart_in_the_middle_does_not_page_again(receiver, metrics):
    ledger = MemoryLedger()
    pager, sender = build(receiver, ledger, metrics)
    try:
        run_all(pager, [member("refusal/a"), member("cost/b")])
    finally:
        sender.close()
    before = len(receiver.bodies(PD_PATH))

    # A new pager on the same ledger, reading everything again (its group lost its offsets).
    again, sender = build(receiver, ledger, PagerMetrics())
    try:
        asyncio.run(again.restore())
        replayed = run_all(again, [member("refusal/a"), member("cost/b")])
        rest = run_all(again, [member("tokens/c"), member("refusal/a", "resolve"), member("cost/b", "resolve"),
                               member("tokens/c", "resolve")])
    finally:
        sender.close()
    assert all(o["pagerduty"] == "duplicate" for o in replayed)
    assert [o["pagerduty"] for o in rest] == ["delivered", "grouped", "grouped", "delivered"]
    events = receiver.bodies(PD_PATH)[before:]
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [("trigger", GROUP), ("resolve", GROUP)]
    # The problem's severity remembers cost/b (SEV-1), paged before the restart.
    assert events[0]["payload"]["severity"] == "critical"
    assert events[0]["payload"]["custom_details"]["open_incidents"] == sorted(MEMBERS)


def test_incidents_without_group_key_are_problems_of_their_own(receiver, metrics):
    pager, sender = build(receiver, MemoryLedger(), metrics)
    try:
        run_all(pager, [incident(dedup_key="d/1", incident_id="1"), incident(dedup_key="d/2", incident_id="2"),
                        incident("resolve", dedup_key="d/1", incident_id="1r")])
    finally:
        sender.close()
    events = receiver.bodies(PD_PATH)
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [
        ("trigger", "d/1"), ("trigger", "d/2"), ("resolve", "d/1")]
    assert "group_key" not in events[0]["payload"]["custom_details"]


def test_a_resolve_closes_the_problem_its_trigger_opened(receiver, metrics):
    """The engine may regroup; the PagerDuty incident to resolve is the one the trigger went to."""
    pager, sender = build(receiver, MemoryLedger(), metrics)
    try:
        run_all(pager, [member("refusal/a"), member("refusal/a", "resolve", group_key="problem/other")])
    finally:
        sender.close()
    assert [(e["event_action"], e["dedup_key"]) for e in receiver.bodies(PD_PATH)] == [
        ("trigger", GROUP), ("resolve", GROUP)]


def test_the_rollback_target_reaches_alertmanager_and_pagerduty():
    from semwatch.contract import Containment, Incident
    from sinks.pager.alertmanager import alert_annotations, describe
    from sinks.pager.pagerduty import event_for

    containment = Containment(field="prompt_version", current="v8", rollback_to="v7",
                              scope={"app": "support-bot", "route": "billing"}, changed_at="2026-01-05T10:00:00.000Z",
                              lead_s=180.0, rank_score=0.9, alternatives=0,
                              summary="roll back prompt_version v8 -> v7 on support-bot/billing (changed 3 min before the spike)")
    inc = Incident(incident_id="i1", dedup_key="d/1", event_action="trigger", severity="SEV-2",
                   kind="false_refusal_spike", detector="false-refusal-spike", summary="refusals up",
                   segment={"app": "support-bot", "route": "billing"}, window_start="2026-01-05T10:03:00Z",
                   window_end="2026-01-05T10:05:00Z", detected_at="2026-01-05T10:05:00Z", containment=containment)
    assert alert_annotations(inc)["containment"].startswith("roll back prompt_version v8 -> v7")
    assert "containment: roll back" in describe(inc)
    details = event_for(inc, "KEY")["payload"]["custom_details"]
    assert details["containment"]["rollback_to"] == "v7" and details["containment"]["field"] == "prompt_version"
