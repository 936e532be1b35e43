"""Incident records -> Alertmanager API v2 alerts (``POST {url}/api/v2/alerts``).

One incident is one alert, identified (like every Alertmanager alert) by its label set: the
``dedup_key`` label keeps two incidents of one detector apart, and the ``group_key`` label (the
incident's problem, or its own ``dedup_key`` when it has none) lets Alertmanager group the
incidents of one problem into one notification (``group_by: [alertname, group_key]`` in
config/alertmanager/alertmanager.yml) while each stays visible as its own alert. A trigger posts the alert without
``endsAt``; a resolve posts the same labels with ``endsAt``. Alertmanager forgets an alert that is not
re-sent within its ``resolve_timeout`` (it resolves it itself), so :class:`AlertmanagerTarget` keeps
every open alert and the pager agent (:mod:`sinks.pager.agent`) re-sends them periodically until
they resolve.

Times: incidents carry event time, Alertmanager works in wall-clock time. ``startsAt`` is the
trigger's ``detected_at`` and ``endsAt`` the resolve's ``detected_at``, both clamped to *now*: an
explicit resolve must resolve the alert now, even when a producer's clock runs ahead (an ``endsAt``
in the future would keep the alert firing until then, and a ``startsAt`` in the future is rejected).

Re-sends run in line with the pages on the Alertmanager lane (:mod:`sinks.pager.dispatch`), so an
open alert is never re-sent after its resolve went out.

Retries live in :mod:`sinks.pager.delivery` (the sender is passed in), dedup in
:mod:`sinks.pager.dispatch`.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Optional

from semwatch.contract import Incident, format_ts, parse_ts
from sinks.pager.delivery import Delivery, HttpSender
from sinks.pager.records import SEVERITY, Problem, problem_key, truncate

log = logging.getLogger("semwatch.pager.alertmanager")

ALERTNAME = "SemwatchIncident"
SOURCE = "semwatch-pager"
# Segment keys that become alert labels. Everything else in a segment stays in the description:
# labels are Alertmanager's grouping and routing keys and must stay bounded.
DEFAULT_SEGMENT_LABELS = ("app", "route", "model", "prompt_version")
MAX_LABEL_VALUE = 128
MAX_SUMMARY = 1024
MAX_DESCRIPTION = 4096
RESERVED_LABELS = frozenset({"alertname", "kind", "severity", "semwatch_severity", "detector",
                             "dedup_key", "group_key", "source"})
MAX_RELATED = 20  # dedup keys listed in the ``related`` annotation
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
POST_CHUNK = 500  # alerts per request when re-sending


def check_segment_labels(names: Iterable[str]) -> tuple[str, ...]:
    """Validate an allow-list of segment keys used as labels (a start-up error names the bad one)."""
    out = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"segment label {name!r} is not a valid Alertmanager label name")
        if name in RESERVED_LABELS:
            raise ValueError(f"segment label {name!r} collides with a label the pager sets itself")
        out.append(name)
    return tuple(dict.fromkeys(out))


def alert_labels(inc: Incident, segment_labels: Iterable[str] = DEFAULT_SEGMENT_LABELS) -> dict[str, str]:
    labels = {
        "alertname": ALERTNAME,
        "kind": inc.kind,
        "severity": SEVERITY[inc.severity],
        "semwatch_severity": inc.severity,
        "detector": inc.detector,
        "dedup_key": inc.dedup_key,
        "group_key": truncate(problem_key(inc), MAX_LABEL_VALUE),
        "source": SOURCE,
    }
    for key in segment_labels:
        value = inc.segment.get(key)
        if value:  # an empty label value means "no label" to Alertmanager anyway
            labels[key] = truncate(value, MAX_LABEL_VALUE)
    return labels


def _num(value: float) -> str:
    return f"{value:.4g}"


def describe(inc: Incident) -> str:
    """The ``description`` annotation: the numbers behind the decision and what changed."""
    parts = []
    numbers = [f"{name} {_num(v)}" for name, v in (("observed", inc.observed), ("baseline", inc.baseline),
                                                   ("threshold", inc.threshold), ("score", inc.score))
               if v is not None]
    if numbers:
        parts.append(", ".join(numbers))
    parts.append(f"window {inc.window_start} to {inc.window_end} (event time)")
    if inc.segment:
        parts.append("segment " + ", ".join(f"{k}={v}" for k, v in sorted(inc.segment.items())))
    if inc.suspected_changes:
        parts.append("suspected changes: " + "; ".join(
            f"{c.field} {c.from_ or '(none)'} -> {c.to or '(none)'} (first seen {c.first_seen})"
            for c in inc.suspected_changes))
    elif inc.event_action == "trigger":
        parts.append("suspected changes: none seen")
    if inc.containment is not None:
        parts.append(f"containment: {inc.containment.summary}")
    return truncate(". ".join(parts) + ".", MAX_DESCRIPTION)


def alert_annotations(inc: Incident) -> dict[str, str]:
    annotations = {"summary": truncate(inc.summary, MAX_SUMMARY), "description": describe(inc),
                   "incident_id": inc.incident_id}
    if inc.runbook_url:
        annotations["runbook_url"] = inc.runbook_url
    if inc.related:
        annotations["related"] = ", ".join(inc.related[:MAX_RELATED])
    if inc.containment is not None:  # annotations, not labels: grouping stays as it is
        annotations["containment"] = truncate(inc.containment.summary, MAX_SUMMARY)
    return annotations


def _wall(ts: str, now: float) -> float:
    return min(parse_ts(ts), now)


def firing_alert(inc: Incident, *, segment_labels: Iterable[str] = DEFAULT_SEGMENT_LABELS,
                 now: Optional[float] = None) -> dict[str, Any]:
    """The alert for a trigger: no ``endsAt`` (Alertmanager keeps it firing while it is re-sent)."""
    now = time.time() if now is None else now
    return {"labels": alert_labels(inc, segment_labels), "annotations": alert_annotations(inc),
            "startsAt": format_ts(_wall(inc.detected_at, now))}


def resolved_alert(inc: Incident, *, open_alert: Optional[dict[str, Any]] = None,
                   segment_labels: Iterable[str] = DEFAULT_SEGMENT_LABELS,
                   now: Optional[float] = None) -> dict[str, Any]:
    """The alert for a resolve: the open alert's labels and ``startsAt`` (its identity) with
    ``endsAt`` = the resolve's ``detected_at``. Without the open alert (e.g. after a restart) the
    labels come from the resolve record, which repeats the trigger's kind, severity and segment."""
    now = time.time() if now is None else now
    if open_alert is not None:
        labels, starts = dict(open_alert["labels"]), parse_ts(open_alert["startsAt"])
    else:
        labels, starts = alert_labels(inc, segment_labels), _wall(inc.window_start, now)
    ends = max(_wall(inc.detected_at, now), starts)  # Alertmanager rejects endsAt < startsAt
    return {"labels": labels, "annotations": alert_annotations(inc), "startsAt": format_ts(starts),
            "endsAt": format_ts(ends)}


class AlertmanagerTarget:
    """Posts alerts to one Alertmanager (or a load balancer in front of an HA pair) and keeps the
    open ones for re-sending."""

    name = "alertmanager"

    def __init__(self, url: str, sender: HttpSender, *,
                 segment_labels: Iterable[str] = DEFAULT_SEGMENT_LABELS, max_open: int = 10000,
                 clock: Callable[[], float] = time.time):
        if not url:
            raise ValueError("Alertmanager needs a URL")
        self.base_url = url.rstrip("/")
        self.endpoint = f"{self.base_url}/api/v2/alerts"
        self.sender = sender
        self.segment_labels = check_segment_labels(segment_labels)
        self.max_open = max_open
        self.clock = clock
        self.open: "OrderedDict[str, dict[str, Any]]" = OrderedDict()  # dedup_key -> firing alert

    def __repr__(self) -> str:
        return f"AlertmanagerTarget({self.endpoint!r})"

    def _remember(self, key: str, alert: dict[str, Any]) -> None:
        if key in self.open:
            return  # keep the first startsAt and labels: they are the alert's identity
        self.open[key] = alert
        while len(self.open) > self.max_open:
            old_key, _ = self.open.popitem(last=False)
            log.warning("more than %d open alerts: no longer re-sending %s; Alertmanager resolves it "
                        "after its resolve_timeout", self.max_open, old_key)

    async def send(self, inc: Incident, problem: Optional[Problem] = None) -> Delivery:
        """One alert per incident (``problem`` is only in its ``group_key`` label)."""
        now = self.clock()
        if inc.event_action == "trigger":
            alert = firing_alert(inc, segment_labels=self.segment_labels, now=now)
            delivery = await self.sender.post_json(self.name, self.endpoint, [alert])
            if delivery.outcome == "delivered":
                self._remember(inc.dedup_key, alert)
            return delivery
        alert = resolved_alert(inc, open_alert=self.open.get(inc.dedup_key), segment_labels=self.segment_labels,
                               now=now)
        delivery = await self.sender.post_json(self.name, self.endpoint, [alert])
        if delivery.outcome != "failed":  # delivered, or refused for good: stop re-sending it
            self.open.pop(inc.dedup_key, None)
        return delivery

    async def refresh(self, inc: Incident) -> None:
        """A repeated trigger of an open incident: re-sending the alert is harmless, and refreshes it."""
        alert = self.open.get(inc.dedup_key)
        if alert is not None:
            await self.sender.post_json(self.name, self.endpoint, [alert], attempts=1)

    def restore(self, inc: Incident) -> None:
        """After a restart: remember what is open (from the ledger, or a record handled before), send nothing."""
        if inc.event_action == "trigger":
            self._remember(inc.dedup_key, firing_alert(inc, segment_labels=self.segment_labels,
                                                       now=self.clock()))
        else:
            self.open.pop(inc.dedup_key, None)

    async def resend_open(self) -> int:
        """Re-send every open alert once (keeps them alive past resolve_timeout; a failure waits
        for the next round). Returns how many were delivered."""
        alerts = list(self.open.values())
        sent = 0
        for i in range(0, len(alerts), POST_CHUNK):
            chunk = alerts[i: i + POST_CHUNK]
            delivery = await self.sender.post_json(self.name, self.endpoint, chunk, attempts=1)
            if delivery.outcome == "delivered":
                sent += len(chunk)
            else:
                log.warning("re-sending %d open alert(s) to %s: %s", len(chunk), self.endpoint,
                            delivery.outcome)
        return sent
