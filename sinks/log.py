"""Incidents in the worker's log: one line each (action, severity, dedup key, summary)."""

from __future__ import annotations

import logging

from semwatch.contract import Incident
from sinks.base import IncidentSink

log = logging.getLogger("semwatch.worker")


class LogSink(IncidentSink):
    def add(self, incident: Incident) -> None:
        log.info("incident %s %s %s %s", incident.event_action, incident.severity, incident.dedup_key,
                 incident.summary)
