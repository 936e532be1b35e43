"""Record validation: raw Kafka value -> RunEvent, or a dead-letter reason. Never raises.

Reasons (bounded, used as a metric label): ``oversized`` (the record, or what it would put in state:
subject ids, tool calls), ``undecodable`` (not UTF-8, or empty), ``invalid_json`` (not JSON, or not
a JSON object, or nested beyond reason), ``schema`` (JSON that breaks the event contract), ``clock``
(event time further in the future than ``max_future_s`` of the wall clock, or older than
``max_age_s``: one producer's clock must not move the partition's time). The detail names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pydantic import ValidationError

from semwatch.contract import RunEvent, describe_validation_error
from semwatch.contract.events import OVERSIZED

# Deeply nested JSON is a parser-exhaustion attack more than telemetry; pydantic's parser has its own
# recursion limit, but we answer before it with a clear reason.
MAX_NESTING = 64


@dataclass(frozen=True)
class Verdict:
    event: Optional[RunEvent]
    reason: Optional[str] = None
    detail: str = ""


def _nesting_exceeds(raw: bytes, limit: int) -> bool:
    # Cheap over-estimate: brackets inside strings count too, which only matters past the limit.
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def validate_record(raw: Optional[bytes], max_bytes: int, *, now: Optional[float] = None,
                    max_future_s: float = 300.0, max_age_s: float = 0.0) -> Verdict:
    """Check one record; with ``now`` (wall clock, epoch seconds) also its event time."""
    verdict = _validate(raw, max_bytes)
    event = verdict.event
    if event is not None and now is not None:
        if event.ts > now + max_future_s:
            return Verdict(None, "clock", f"ts is {event.ts - now:.0f} s in the future (at most {max_future_s:g} s)")
        if max_age_s > 0 and event.ts < now - max_age_s:
            return Verdict(None, "clock", f"ts is {now - event.ts:.0f} s old (at most {max_age_s:g} s)")
    return verdict


def _validate(raw: Optional[bytes], max_bytes: int) -> Verdict:
    if raw is None or len(raw) == 0:
        return Verdict(None, "undecodable", "empty record (no value)")
    if len(raw) > max_bytes:
        return Verdict(None, "oversized", f"record is {len(raw)} bytes, limit {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Verdict(None, "undecodable", f"not UTF-8: {exc.reason} at byte {exc.start}")
    stripped = raw.lstrip()
    if not stripped.startswith(b"{"):
        return Verdict(None, "invalid_json", "not a JSON object")
    if _nesting_exceeds(raw, MAX_NESTING):
        return Verdict(None, "invalid_json", f"JSON nested deeper than {MAX_NESTING} levels")
    try:
        return Verdict(RunEvent.model_validate_json(raw))
    except ValidationError as exc:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            msg = errors[0].get("msg", "invalid JSON")
            return Verdict(None, "invalid_json", msg[:200])
        reason = "oversized" if any(str(e.get("msg", "")).startswith(f"Value error, {OVERSIZED}")
                                    for e in errors) else "schema"
        return Verdict(None, reason, describe_validation_error(exc))
    except (RecursionError, ValueError) as exc:  # belt and braces: never crash on input
        return Verdict(None, "invalid_json", str(exc)[:200])
