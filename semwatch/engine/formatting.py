"""Numbers, durations and segments as a paged human reads them in an incident summary."""

from __future__ import annotations

from semwatch.engine.fields import TOKEN_FIELDS


def compact_number(x: float) -> str:
    """``1.2M``, ``45k``, ``12``, ``0.042``."""
    ax = abs(x)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if ax >= div:
            return f"{x / div:.3g}{suffix}"
    if ax >= 100 or x == int(x):
        return f"{x:.0f}"
    return f"{x:.3g}"


def amount(field_name: str, x: float) -> str:
    """``1.2M tokens``, ``$0.042``, ``3.1 s``, ``0.12 metrics.score``."""
    if field_name in TOKEN_FIELDS:
        return f"{compact_number(x)} tokens"
    if field_name == "cost_usd":
        return f"${x:.2f}" if abs(x) >= 1 else f"${x:.2g}"
    if field_name == "steps":
        return f"{compact_number(x)} steps"
    if field_name == "runs":
        return f"{compact_number(x)} runs"
    if field_name == "count":
        return f"{compact_number(x)} events"
    if field_name.endswith("_s"):
        return f"{x:.3g} s"
    return f"{x:.3g} {field_name}"


def segment_text(segment: dict[str, str]) -> str:
    """``support-bot/billing/gpt-4o`` (empty labels left out)."""
    return "/".join(v for v in segment.values() if v) or "(all)"


def segment_label(segment: dict[str, str]) -> str:
    """``app=support-bot route=billing`` (empty labels as ``-``)."""
    return " ".join(f"{k}={v or '-'}" for k, v in segment.items()) or "all traffic"


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def window_label(seconds: float) -> str:
    """``5m``, ``1h``, ``90s``: a window length as configs write it."""
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
