"""The value serializer of the state table and its changelog (Faust codec ``semwatch-state``).

Records are written in semwatch's own state format (:mod:`semwatch.engine.state_format`: msgpack,
a registered tag and schema per state class, no code on the way in). Anyone who can write to the
changelog topic can put any bytes there, so reading never trusts a record: one the codec refuses is
logged and counted (:func:`refused_total`, exported by the worker as
``semwatch_state_records_refused_total``) and read as *no state* for its key (Faust stores None,
which the worker's state mapping treats as absent), so a forged or damaged record can neither run
code nor stop or loop table recovery.

Changelogs written by earlier releases hold pickle records; :func:`loads` still reads those through
:class:`_LegacyUnpickler`, then checks the result like any record, and the key is written in the new
format the next time its state changes. That path will be removed in a later release.
"""

from __future__ import annotations

import io
import logging
import pickle
from array import _array_reconstructor, array  # type: ignore[attr-defined]
from typing import Any

from faust.serializers import codecs

from semwatch.engine import state_format
from semwatch.engine.state import STATE_TYPES, PlainState, tag_of
from semwatch.engine.state_format import StateDecodeError, StateEncodeError

log = logging.getLogger("semwatch.state")

CODEC_NAME = "semwatch-state"

# (module, class) in pickle records of earlier releases -> the tag of that class now. Both the
# module paths from before the package refactor (detectors/base.py -> semwatch/engine/detector.py,
# detectors/numeric_spike.py -> detectors/run_outlier.py and rate_spike.py, detectors/wrong_entity.py
# -> detectors/wrong_entity_action.py, detectors/refusal_spike.py -> detectors/false_refusal_spike.py,
# detectors/robust_baseline.py -> semwatch/engine/baselines.py, detectors/lifecycle.py and
# changes.py -> semwatch/engine/, rules/threshold.py's window state -> semwatch/engine/windows.py,
# semwatch/engine.py -> semwatch/engine/core.py) and the ones after it. The fields are unchanged.
_LEGACY_CLASSES: dict[tuple[str, str], str] = {
    ("semwatch.engine", "EngineClock"): "engine_clock",
    ("semwatch.engine.core", "EngineClock"): "engine_clock",
    ("detectors.lifecycle", "Lifecycle"): "lifecycle",
    ("semwatch.engine.lifecycle", "Lifecycle"): "lifecycle",
    ("detectors.changes", "ScopeHistory"): "scope_history",
    ("semwatch.engine.changes", "ScopeHistory"): "scope_history",
    ("detectors.robust_baseline", "SampleRing"): "sample_ring",
    ("semwatch.engine.baselines", "SampleRing"): "sample_ring",
    ("detectors.robust_baseline", "DailyBaseline"): "daily_baseline",
    ("semwatch.engine.baselines", "DailyBaseline"): "daily_baseline",
    ("rules.threshold", "Bucket"): "window_bucket",
    ("semwatch.engine.windows", "Bucket"): "window_bucket",
    ("rules.threshold", "WindowState"): "window_segment",
    ("semwatch.engine.windows", "WindowState"): "window_segment",
    ("detectors.numeric_spike", "RunState"): "run_outlier_run",
    ("detectors.run_outlier", "RunState"): "run_outlier_run",
    ("detectors.numeric_spike", "OutlierState"): "run_outlier_segment",
    ("detectors.run_outlier", "OutlierState"): "run_outlier_segment",
    ("detectors.numeric_spike", "RateState"): "rate_spike_segment",
    ("detectors.rate_spike", "RateState"): "rate_spike_segment",
    ("detectors.refusal_spike", "BaselineCounts"): "refusal_baseline",
    ("detectors.false_refusal_spike", "BaselineCounts"): "refusal_baseline",
    ("detectors.refusal_spike", "RefusalSpikeState"): "refusal_spike_segment",
    ("detectors.false_refusal_spike", "RefusalSpikeState"): "refusal_spike_segment",
    ("detectors.wrong_entity", "RunState"): "wrong_entity_run",
    ("detectors.wrong_entity_action", "RunState"): "wrong_entity_run",
}


class _LegacyUnpickler(pickle.Unpickler):
    """Reads the pickle records of earlier releases, and nothing else; to be removed in a later
    release, once no changelog holds them.

    Globals are looked up by exact (module, name) pair: the state classes above (resolved through
    the tag registry, never imported) and the two names pickle uses for ``array('d')``. No prefix
    matching, no dotted names, no ``getattr``, no builtins. Those records were written with
    ``pickle.HIGHEST_PROTOCOL``, which rebuilds an object with the NEWOBJ opcode and its state with
    BUILD (``PlainState.__setstate__``, which sets known fields only), so ``copyreg``'s
    reconstructors, used by protocols 0 and 1 only, are not admitted either.
    """

    def find_class(self, module: str, name: str) -> Any:
        tag = _LEGACY_CLASSES.get((module, name))
        if tag is not None and tag in STATE_TYPES:
            return STATE_TYPES[tag]
        if (module, name) == ("array", "array"):
            return array
        if (module, name) == ("array", "_array_reconstructor"):
            return _array_reconstructor
        raise pickle.UnpicklingError(f"state codec refuses {module[:64]}.{name[:64]}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("state codec refuses persistent ids")


def _load_legacy(data: bytes) -> PlainState:
    try:
        value = _LegacyUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # refused globals, malformed pickles, constructors that refused
        raise StateDecodeError(f"pickle record: {str(exc)[:160]}") from None
    if tag_of(type(value)) is None:
        raise StateDecodeError(f"pickle record of a {type(value).__name__}, not a state object")
    # Held to the same schema as a new record, by writing and reading it once.
    try:
        return state_format.loads(state_format.dumps(value))
    except (StateEncodeError, TypeError, ValueError) as exc:
        raise StateDecodeError(f"pickle record: {str(exc)[:160]}") from None


# -- the codec ------------------------------------------------------------------------------------
_refused = 0


def refused_total() -> int:
    """Records refused in this process so far (the worker exports it as a counter)."""
    return _refused


def dumps(state: PlainState) -> bytes:
    return state_format.dumps(state)


def loads(data: bytes) -> PlainState:
    """The state of a record, new format or an earlier release's pickle; StateDecodeError else."""
    if data[:1] == b"\x80":  # pickle, protocol 2 and later (a new record starts with 0xc1)
        return _load_legacy(bytes(data))
    return state_format.loads(data)


def _refuse(exc: StateDecodeError) -> None:
    global _refused
    _refused += 1
    n = _refused
    if n & (n - 1) == 0:  # the 1st, 2nd, 4th ... time: a flood of forged records stays readable
        log.warning("%s; its key is read as having no state (%d records refused so far)", exc, n)


class StateCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return dumps(obj)

    def _loads(self, s: bytes) -> Any:
        try:
            return loads(s)
        except StateDecodeError as exc:
            _refuse(exc)
        except Exception as exc:  # a bug of ours: still no reason to stop table recovery
            log.exception("state codec failed on a record")
            _refuse(StateDecodeError(f"{type(exc).__name__} while decoding"))
        return None


codecs.register(CODEC_NAME, StateCodec())
