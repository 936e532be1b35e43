"""Incident records on the Kafka sink topic: JSON value, key = dedup_key (DESIGN.md)."""

from __future__ import annotations

from semwatch.contract import Incident


def incident_record(incident: Incident) -> bytes:
    """The record value for ``semwatch.incidents``; the key is ``incident.dedup_key``."""
    return incident.to_json().encode("utf-8")
