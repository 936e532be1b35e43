"""The incident record as the pager reads it: parsing with a reason, the problem it belongs to,
and what every target shares.

>>> parse_incident(b"[1]")
Traceback (most recent call last):
...
sinks.pager.records.MalformedIncident: expected a JSON object, got list
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from pydantic import ValidationError

from semwatch.contract import Incident, describe_validation_error, parse_ts

ACTIONS = ("trigger", "resolve")

# semwatch severity -> PagerDuty (and Alertmanager ``severity`` label) severity (docs/contracts.md).
SEVERITY = {"SEV-1": "critical", "SEV-2": "error", "SEV-3": "warning"}


def problem_key(inc: Incident) -> str:
    """The problem an incident belongs to: its ``group_key``, or its own ``dedup_key`` (a problem of one)."""
    return inc.group_key or inc.dedup_key


def highest(severities) -> str:
    """The highest of semwatch severities (SEV-1 is the highest)."""
    return min(severities)


@dataclass(frozen=True)
class Problem:
    """A problem as a target that pages once per problem sees it when one of its incidents comes.

    ``key`` is the page's dedup key (:func:`problem_key`); ``severity`` the highest of the open
    members, this record's included when it is a trigger; ``members`` the dedup keys of the open
    members once this record is delivered.
    """

    key: str
    severity: str
    members: tuple[str, ...]


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class MalformedIncident(ValueError):
    def __init__(self, message: str, event_action: str = "unknown"):
        super().__init__(message)
        self.event_action = event_action


def parse_incident(value: Optional[bytes]) -> Incident:
    """A record value -> Incident, or MalformedIncident saying what is wrong."""
    if value is None:
        raise MalformedIncident("empty record value")
    try:
        data = json.loads(value)
    except UnicodeDecodeError:
        raise MalformedIncident("record value is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedIncident(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedIncident(f"expected a JSON object, got {type(data).__name__}")
    action = data.get("event_action")
    action = action if action in ACTIONS else "unknown"
    try:
        inc = Incident.model_validate(data)
    except ValidationError as exc:
        raise MalformedIncident(f"schema: {describe_validation_error(exc)}", action) from None
    for name in ("detected_at", "window_start", "window_end"):  # the targets need real times
        try:
            parse_ts(getattr(inc, name))
        except ValueError as exc:
            raise MalformedIncident(f"schema: {name}: {exc}", action) from None
    return inc
