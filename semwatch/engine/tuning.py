"""Sweep spaces for ``semwatch tune``: the sensitivity knobs each detector type declares.

A detector class names its knobs in ``tuning_space`` (``{param: values}``); a space maps a
parameter to the values to try; ``tune`` replays the grid (the product of the
lists) plus the configured setting. :class:`Rel` values are multiples of the configured value, so
one table serves several instances of a type with different scales (``cost-per-route`` watches
$/event at ratio 5, ``token-burn`` tokens/min at ratio 3). :data:`LEVEL` stands for whichever of
``above``/``below`` a threshold rule sets.

Grids are kept small on purpose: every point is a full replay of the recording (seconds per
simulated day per point), so two or three knobs with two to four values each. The knobs are the
ones that trade sensitivity against false alarms (thresholds, significance, minimum volume) and
earliness (sustain ``for_s``); structural settings (windows, group_by, baselines) are left alone.

Hysteresis stays consistent: when a trigger level moves, its clear level moves with it
(:func:`link`), so no candidate fails validation for ``clear`` above ``above``.

>>> from typing import Optional
>>> class LevelParams(DetectorParams):
...     above: Optional[float] = None
...     clear: Optional[float] = None
...     for_s: float = 0.0
>>> p = LevelParams(name="error-rate", type="level", above=0.2, clear=0.1, for_s=300)
>>> space = {LEVEL: Rel(0.5, 1.0), "for_s": Rel(0.5, 1.0)}
>>> [u for u, _ in candidates(p, space)][:3]
[{}, {'above': 0.1, 'for_s': 150.0, 'clear': 0.05}, {'above': 0.1, 'for_s': 300.0, 'clear': 0.05}]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

from pydantic import ValidationError

from semwatch.engine.detector import REGISTRY, DetectorParams

LEVEL = "above|below"


@dataclass(frozen=True)
class Rel:
    """Multiples of the configured value (rounded to 4 significant digits; ints stay ints)."""

    factors: tuple[float, ...]

    def __init__(self, *factors: float):
        object.__setattr__(self, "factors", tuple(factors))


Values = Union[list, Rel]
Space = Mapping[str, Values]


def space_of(params: DetectorParams, override: Optional[Mapping[str, Space]] = None) -> Space:
    """The space to sweep for ``params``: ``override[type]`` when given, else the type's own
    ``tuning_space`` (empty for an unknown type)."""
    if override is not None and params.type in override:
        return override[params.type]
    cls = REGISTRY.get(params.type)
    return getattr(cls, "tuning_space", None) or {}

def _round(x: float, like: Any) -> Any:
    if isinstance(like, int) and not isinstance(like, bool):
        return max(1, int(round(x))) if like >= 1 else int(round(x))
    return float(f"{x:.4g}")


def resolve_space(params: DetectorParams, space: Optional[Space] = None) -> dict[str, list]:
    """The space of one configured detector with :class:`Rel` and :data:`LEVEL` resolved.

    ``space`` defaults to the detector type's own (:func:`space_of`). Parameters the detector does
    not have, or that are unset (None), are left out.
    """
    space = space_of(params) if space is None else space
    fields = type(params).model_fields
    out: dict[str, list] = {}
    for name, values in space.items():
        if name == LEVEL:
            name = "above" if getattr(params, "above", None) is not None else "below"
        if name not in fields:
            continue
        current = getattr(params, name)
        if isinstance(values, Rel):
            if current is None or isinstance(current, bool):
                continue
            values = [_round(current * f, current) for f in values.factors]
        vals: list = []
        for v in values:
            if v not in vals:
                vals.append(v)
        out[name] = vals
    return out


def unknown_params(params: DetectorParams, space: Optional[Space] = None) -> list[str]:
    """Space entries this detector's Params do not have (a renamed knob: fix the space)."""
    space = space_of(params) if space is None else space
    fields = type(params).model_fields
    return [n for n in space if n != LEVEL and n not in fields]


def link(params: DetectorParams, update: dict[str, Any]) -> dict[str, Any]:
    """Move clear levels with the trigger levels they pair with (hysteresis stays valid)."""
    update = dict(update)
    for level in ("above", "below"):
        if level in update and getattr(params, "clear", None) is not None and "clear" not in update:
            old = getattr(params, level)
            if old:
                update["clear"] = _round(params.clear * update[level] / old, params.clear)
    if "min_increase" in update and hasattr(params, "clear_increase") and "clear_increase" not in update:
        if params.min_increase:
            update["clear_increase"] = _round(
                params.clear_increase * update["min_increase"] / params.min_increase, 0.0)
    if "min_ratio" in update and hasattr(params, "clear_ratio") and "clear_ratio" not in update:
        if params.clear_ratio > update["min_ratio"]:
            update["clear_ratio"] = update["min_ratio"]
    return update


def candidates(params: DetectorParams, space: Optional[Space] = None
               ) -> list[tuple[dict[str, Any], DetectorParams]]:
    """``[(update, validated params)]``: the configured setting first (update ``{}``), then the grid.

    Every candidate is validated by the detector's own Params model (a combination the model
    rejects is skipped); duplicates of the configured setting are dropped.
    """
    cls = type(params)
    base = params.model_dump()
    out: list[tuple[dict[str, Any], DetectorParams]] = [({}, params)]
    resolved = resolve_space(params, space)
    keys = list(resolved)
    for combo in itertools.product(*(resolved[k] for k in keys)):
        update = link(params, dict(zip(keys, combo)))
        try:
            cand = cls.model_validate({**base, **update})
        except ValidationError:
            continue
        if any(cand == other for _, other in out):
            continue
        out.append((update, cand))
    return out


def describe(update: Mapping[str, Any]) -> str:
    """``alpha=1e-05 for_s=45`` (or ``configured``)."""
    if not update:
        return "configured"
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in update.items())


# -- probes: what tune plots around a labelled window ---------------------------------------------
#: One plotted point: (event time, signal, baseline, threshold, second signal); None = not shown.
Point = tuple[float, Optional[float], Optional[float], Optional[float], Optional[float]]


class ProbeUnavailable(Exception):
    """This detector has no per-evaluation signal for this window (the reason says why)."""


@dataclass
class SignalProbe:
    """How ``semwatch tune`` reads one detector's signal from its state while a replay runs.

    A detector's ``probe(segment, window)`` returns one (or raises :class:`ProbeUnavailable`);
    ``read(engine, event)`` is called after each event inside the window and returns a new point,
    or None when nothing new was evaluated. It reads the state the detector keeps anyway, through
    ``engine.get(detector, segment)``.
    """

    signal: str
    read: Callable[[Any, Any], Optional[Point]]
    threshold_label: str = "threshold"
    signal2: Optional[str] = None
