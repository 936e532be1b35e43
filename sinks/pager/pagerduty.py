"""Incident records -> PagerDuty Events API v2 (``POST {url}/v2/enqueue``).

The incident record was designed as a PagerDuty event (docs/contracts.md): ``dedup_key``, ``event_action``
and the severity map straight across, so this module is a mapping plus one HTTP call. Retries live
in :mod:`sinks.pager.delivery` (the sender is passed in), dedup in :mod:`sinks.pager.dispatch`.

One page per problem: the event's ``dedup_key`` is the problem's (the incident's ``group_key``,
or its own ``dedup_key`` when it has none). The first incident of a problem opens the PagerDuty
incident; the triggers of later ones carry the same ``dedup_key`` with their details and the
highest severity of the open incidents, which PagerDuty adds to the open incident instead of
paging again. The dispatcher sends the resolve only when the last open incident of the problem
resolves. An incident without ``group_key`` maps exactly as before there were groups.

>>> inc = Incident(incident_id="i1", dedup_key="d/1", event_action="resolve", severity="SEV-1",
...                kind="cost_spike", detector="cost", summary="s", segment={}, window_start="t",
...                window_end="t", detected_at="t")
>>> event_for(inc, "KEY")
{'routing_key': 'KEY', 'event_action': 'resolve', 'dedup_key': 'd/1'}
"""

from __future__ import annotations

from typing import Any, Optional

from semwatch.contract import Incident
from sinks.pager.delivery import Delivery, HttpSender
from sinks.pager.records import SEVERITY, Problem, truncate

DEFAULT_URL = "https://events.pagerduty.com"

MAX_SUMMARY = 1024  # PagerDuty truncates longer summaries itself; we cut them cleanly instead
MAX_SOURCE = 255
MAX_EVIDENCE_IDS = 20
# Segment labels named in ``source``: bounded and readable, never run or entity ids.
SOURCE_LABELS = ("app", "route", "model", "prompt_version")


def event_for(inc: Incident, routing_key: str, problem: Optional[Problem] = None) -> dict[str, Any]:
    """The Events API v2 body for one incident record of ``problem`` (default: a problem of one).
    A resolve carries only the key fields."""
    problem = problem or Problem(inc.dedup_key, inc.severity, (inc.dedup_key,))
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": inc.event_action,
                             "dedup_key": problem.key}
    if inc.event_action == "resolve":
        return event
    segment = inc.segment
    source = ",".join(f"{k}={segment[k]}" for k in SOURCE_LABELS if segment.get(k))
    summary = inc.summary if len(problem.members) < 2 else f"[{len(problem.members)} incidents] {inc.summary}"
    payload: dict[str, Any] = {
        "summary": truncate(summary, MAX_SUMMARY),
        "source": truncate(f"semwatch/{source}" if source else "semwatch", MAX_SOURCE),
        "severity": SEVERITY[problem.severity],
        "timestamp": inc.detected_at,
        "component": inc.detector,
    }
    if segment.get("app"):
        payload["group"] = segment["app"]
    payload["class"] = inc.kind
    evidence = {k: list(inc.evidence[k])[:MAX_EVIDENCE_IDS]
                for k in ("run_ids", "event_ids") if isinstance(inc.evidence.get(k), list)}
    payload["custom_details"] = {
        "incident_id": inc.incident_id,
        "semwatch_severity": inc.severity,
        "observed": inc.observed,
        "baseline": inc.baseline,
        "threshold": inc.threshold,
        "score": inc.score,
        "window_start": inc.window_start,
        "window_end": inc.window_end,
        "segment": dict(segment),
        "suspected_changes": [c.model_dump(mode="json", by_alias=True) for c in inc.suspected_changes],
        "evidence": evidence,
        "containment": inc.containment.model_dump(mode="json") if inc.containment is not None else None,
    }
    if inc.group_key is not None:
        payload["custom_details"].update(group_key=inc.group_key, dedup_key=inc.dedup_key,
                                         open_incidents=list(problem.members), related=list(inc.related))
    event["payload"] = payload
    event["client"] = "semwatch"
    if inc.runbook_url:
        event["links"] = [{"href": inc.runbook_url, "text": "Runbook"}]
    return event


class PagerDutyTarget:
    """Sends triggers and resolves to one PagerDuty integration (one routing key).

    PagerDuty itself keeps one open incident per dedup_key, so this target needs no state: the
    pager's dedup (sinks.pager.dispatch) only saves PagerDuty the duplicate events.
    """

    name = "pagerduty"
    pages_per_problem = True  # one PagerDuty incident per group_key (see the module docstring)

    def __init__(self, url: Optional[str], routing_key: str, sender: HttpSender):
        if not routing_key:
            raise ValueError("PagerDuty needs a routing key (SEMWATCH_PAGERDUTY_ROUTING_KEY)")
        self.base_url = (url or DEFAULT_URL).rstrip("/")
        self.endpoint = f"{self.base_url}/v2/enqueue"
        self._routing_key = routing_key
        self.sender = sender

    def __repr__(self) -> str:  # never show the routing key
        return f"PagerDutyTarget({self.endpoint!r})"

    async def send(self, inc: Incident, problem: Optional[Problem] = None) -> Delivery:
        return await self.sender.post_json(self.name, self.endpoint, event_for(inc, self._routing_key, problem))

    async def refresh(self, inc: Incident) -> None:
        """A repeated trigger of an open incident: PagerDuty already has it; send nothing."""

    def restore(self, inc: Incident) -> None:
        """Warm start: nothing to remember (PagerDuty keeps the incident)."""
