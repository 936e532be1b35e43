"""Sweep spaces for ``semwatch tune``: the sensitivity knobs of each detector *type*.

A space maps a parameter to the values to try; ``tune`` replays the grid (the product of the
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

>>> from rules.threshold import ThresholdParams
>>> p = ThresholdParams(name="error-rate", type="threshold", field="error_type", aggregate="rate",
...                     above=0.2, clear=0.1, for_s=300)
>>> [u for u, _ in candidates(p)][:3]
[{}, {'above': 0.1, 'for_s': 150.0, 'clear': 0.05}, {'above': 0.1, 'for_s': 300.0, 'clear': 0.05}]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from pydantic import ValidationError

from detectors.base import DetectorParams

LEVEL = "above|below"


@dataclass(frozen=True)
class Rel:
    """Multiples of the configured value (rounded to 4 significant digits; ints stay ints)."""

    factors: tuple[float, ...]

    def __init__(self, *factors: float):
        object.__setattr__(self, "factors", tuple(factors))


Values = Union[list, Rel]

#: type name -> {param: values}. Edit here to widen or narrow a sweep.
SPACES: dict[str, dict[str, Values]] = {
    # Significance and sustain: alpha trades false alarms for sensitivity, for_s for earliness.
    "false_refusal_spike": {"alpha": [1e-3, 1e-4, 1e-5, 1e-6], "for_s": [15.0, 45.0, 90.0]},
    # Point detector: what counts as in scope. strict also checks entity types the subject does
    # not list; without widening, ids the run's own reads returned are out of scope.
    "wrong_entity_action": {"strict": [False, True], "widen_from_results": [True, False]},
    "wrong_entity_rate": {"above": Rel(0.4, 1.0, 2.0), "min_volume": [5, 20]},
    # Robust z and the ratio to the median run.
    "run_outlier": {"z_threshold": [4.0, 5.0, 6.0, 8.0], "min_ratio": Rel(0.5, 1.0, 2.0)},
    # Absolute caps: steps per run and repeats of one tool call (normal agents: <= ~34 steps).
    "runaway_loop": {"max_steps": Rel(0.8, 1.0, 1.25, 1.6), "max_repeated_calls": Rel(0.5, 1.0, 1.5)},
    # Ratio to the usual level and sustain.
    "rate_spike": {"min_ratio": Rel(2 / 3, 1.0, 1.5), "for_s": Rel(0.5, 1.0, 2.0)},
    # The level and the sustain of a static rule.
    "threshold": {LEVEL: Rel(0.5, 0.75, 1.0, 1.5), "for_s": Rel(0.5, 1.0)},
}


def _round(x: float, like: Any) -> Any:
    if isinstance(like, int) and not isinstance(like, bool):
        return max(1, int(round(x))) if like >= 1 else int(round(x))
    return float(f"{x:.4g}")


def resolve_space(params: DetectorParams, spaces: Optional[Mapping[str, Mapping[str, Values]]] = None
                  ) -> dict[str, list]:
    """The space of one configured detector with :class:`Rel` and :data:`LEVEL` resolved.

    Parameters the detector does not have, or that are unset (None), are left out.
    """
    table = SPACES if spaces is None else spaces
    space = table.get(params.type) or {}
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


def unknown_params(params: DetectorParams,
                   spaces: Optional[Mapping[str, Mapping[str, Values]]] = None) -> list[str]:
    """Space entries this detector's Params do not have (a renamed knob: fix the table)."""
    table = SPACES if spaces is None else spaces
    fields = type(params).model_fields
    return [n for n in (table.get(params.type) or {}) if n != LEVEL and n not in fields]


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


def candidates(params: DetectorParams, spaces: Optional[Mapping[str, Mapping[str, Values]]] = None
               ) -> list[tuple[dict[str, Any], DetectorParams]]:
    """``[(update, validated params)]``: the configured setting first (update ``{}``), then the grid.

    Every candidate is validated by the detector's own Params model (a combination the model
    rejects is skipped); duplicates of the configured setting are dropped.
    """
    cls = type(params)
    base = params.model_dump()
    out: list[tuple[dict[str, Any], DetectorParams]] = [({}, params)]
    space = resolve_space(params, spaces)
    keys = list(space)
    for combo in itertools.product(*(space[k] for k in keys)):
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
