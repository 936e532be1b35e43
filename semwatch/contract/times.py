"""Event time: RFC 3339 strings or epoch seconds in, RFC 3339 UTC out."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any


def parse_ts(value: Any) -> float:
    """RFC 3339 string or epoch seconds -> epoch seconds (float, UTC)."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string or epoch seconds, not a boolean")
    if isinstance(value, (int, float)):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            # The value is not echoed: the detail goes to logs and DLQ headers, and may be anything.
            raise ValueError(f"not an RFC 3339 timestamp (a string of {len(value)} characters)") from None
        if parsed.tzinfo is None:
            raise ValueError("timestamp has no UTC offset; RFC 3339 requires one (e.g. 'Z')")
        ts = parsed.timestamp()
    else:
        raise ValueError("timestamp must be an RFC 3339 string or epoch seconds")
    if not math.isfinite(ts) or ts < 0 or ts > 32503680000:  # year 3000
        raise ValueError("timestamp out of range")
    return ts


def format_ts(ts: float) -> str:
    """Epoch seconds -> RFC 3339 UTC with milliseconds (``2026-01-05T10:00:00.000Z``)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
