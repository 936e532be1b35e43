"""Simulated time: units, and the RFC 3339 timestamps events carry."""

from __future__ import annotations

import re
from datetime import datetime, timezone

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

_DATES: dict[int, str] = {}  # days since the epoch -> "YYYY-MM-DD"; formatting dates is the slow part


def format_ms(ms: int) -> str:
    """Epoch milliseconds -> RFC 3339 UTC with milliseconds."""
    day, rest = divmod(ms, 86_400_000)
    date = _DATES.get(day)
    if date is None:
        date = datetime.fromtimestamp(day * 86400, tz=timezone.utc).strftime("%Y-%m-%d")
        _DATES[day] = date
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{date}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def to_ms(t: float) -> int:
    return int(round(t * 1000.0))


def format_ts(t: float) -> str:
    """Epoch seconds -> RFC 3339 UTC with milliseconds, e.g. ``2026-01-05T00:00:00.000Z``."""
    return format_ms(to_ms(t))


def parse_time(value: str | float | int) -> float:
    """RFC 3339 string (``Z`` or offset) or epoch seconds -> epoch seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip()
    try:
        return float(s)
    except ValueError:
        pass
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time or epoch seconds: {value!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: str | float | int) -> float:
    """``90s``, ``30m``, ``6h``, ``1d``, ``2d``, ``1w`` or plain seconds -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value).lower())
    if not m:
        raise ValueError(f"bad duration {value!r}: use e.g. 90s, 30m, 6h, 1d")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
