"""The state changelog codec against hostile input: forged pickles and forged state records are
refused without running anything, a refused record reads as no state, earlier releases' pickle
records still recover (through an exact whitelist), and the new format round-trips exactly."""

from __future__ import annotations

import logging
import math
import pickle
import sys
import types
from array import array
from dataclasses import dataclass

import msgpack
import numpy as np
import pytest

from semwatch.config import import_all_detectors
from semwatch.engine import state_format
from semwatch.engine.baselines import SampleRing
from semwatch.engine.lifecycle import Lifecycle
from semwatch.engine.state import STATE_TYPES, PlainState, state_type, tag_of
from semwatch.engine.state_format import MAGIC, StateDecodeError, StateEncodeError
from semwatch.engine.windows import Bucket, WindowState
from streams import state_codec
from tests.support import engine_halfway
from tests.test_detector_contract import same_state

import_all_detectors()


# -- hand-made pickles (protocol 4 opcodes) ------------------------------------------------------
def _str(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def _global(module: str, name: str) -> bytes:
    return _str(module) + _str(name) + b"\x93"  # STACK_GLOBAL


def _call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"  # MARK args TUPLE REDUCE


def _pickle(body: bytes) -> bytes:
    return b"\x80\x04" + body + b"."


class _Shell:
    """Pickles as a call of os.system (posix.system), as any attacker's class would."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os
        return os.system, (self.command,)


def forged_pickles(marker: str) -> dict[str, bytes]:
    touch = _str(f"touch {marker}")
    return {
        # The record from the issue: an allowed module prefix, then a dotted attribute path.
        "semwatch.settings/os.system": _pickle(_call(_global("semwatch.settings", "os.system"), touch)),
        "dotted chain from an engine module": _pickle(
            _call(_global("semwatch.engine.core", "logging.os.system"), touch)),
        "builtins.eval": _pickle(_call(_global("builtins", "eval"),
                                       _str(f"__import__('os').system('touch {marker}')"))),
        "getattr chain": _pickle(_call(_call(_global("builtins", "getattr"),
                                             _global("semwatch.settings", "os"), _str("system")), touch)),
        "copyreg._reconstructor of a non-state class": _pickle(
            _call(_global("copyreg", "_reconstructor"), _global("collections", "OrderedDict"),
                  _global("builtins", "dict"), b"]")),  # an OrderedDict under the old codec
        "numpy global": _pickle(_call(_global("numpy", "load"), _str(marker))),
        "numpy reconstructor": _pickle(_call(_global("numpy.core.multiarray", "_reconstruct"),
                                             _global("numpy", "ndarray"), b"K\x00", _str("b"))),
        "posix.system via __reduce__": pickle.dumps(_Shell(f"touch {marker}"), protocol=4),
        "a class of an allowed module that is no state": _pickle(
            _call(_global("semwatch.engine.core", "EngineStats"))),
        "a detector class": _pickle(_call(_global("detectors.run_outlier", "RunOutlier"))),
    }


@pytest.mark.parametrize("name", list(forged_pickles("x")))
def test_forged_pickle_records_are_refused_and_run_nothing(name, tmp_path):
    marker = tmp_path / "pwned"
    record = forged_pickles(str(marker))[name]
    with pytest.raises(StateDecodeError, match="refuses"):
        state_codec.loads(record)
    before = state_codec.refused_total()
    assert state_codec.StateCodec()._loads(record) is None  # what table recovery gets: no state
    assert state_codec.refused_total() == before + 1
    assert not marker.exists(), "the forged record ran a command"


def test_even_a_bug_in_decoding_reads_as_no_state(monkeypatch):
    # Table recovery must never stop on a record: an unexpected error is counted like a refusal.
    def broken(data):
        raise RuntimeError("a bug")

    monkeypatch.setattr(state_format, "loads", broken)
    before = state_codec.refused_total()
    assert state_codec.StateCodec()._loads(state_codec.dumps(Lifecycle())) is None
    assert state_codec.refused_total() == before + 1


def test_a_whitelisted_class_holding_something_else_is_refused():
    odd = Lifecycle()
    odd.status = {"a set"}  # type: ignore[assignment]
    with pytest.raises(StateDecodeError, match="set"):
        state_codec.loads(pickle.dumps(odd, protocol=pickle.HIGHEST_PROTOCOL))
    with pytest.raises(StateDecodeError, match="not a state object"):
        state_codec.loads(pickle.dumps(array("d", [1.0]), protocol=pickle.HIGHEST_PROTOCOL))


# -- forged records in the new format -------------------------------------------------------------
def _record(value) -> bytes:
    return MAGIC + msgpack.packb(value, use_bin_type=True)


def _state(tag: str, fields: dict, version: int = 1) -> list:
    return [msgpack.ExtType(1, tag.encode()), version, fields]


@pytest.mark.parametrize("record, reason", [
    (b"", "no header"),
    (b"\xc1sw\x02" + b"\x90", "format version 2"),
    (MAGIC + b"\x93\xd4", "malformed"),
    (_record(None), "not a state object"),
    (_record({"status": "ok"}), "not a state object"),
    (_record(_state("os.system", {})), "unknown state tag"),
    (_record(_state("lifecycle", {"peak": "high"})), "lifecycle.peak"),
    (_record(_state("lifecycle", {"since": True})), "lifecycle.since"),
    (_record(_state("lifecycle", {"status": b"ok"})), "lifecycle.status"),
    (_record(_state("engine_clock", {"max_ts": msgpack.ExtType(9, b"")})), "extension type 9"),
    (_record(_state("window_bucket", {"sketch": {1.5: 1}})), "window_bucket.sketch"),
    (_record(_state("window_bucket", {"sketch": {True: 1}})), "window_bucket.sketch"),
    (_record(_state("sample_ring", {"values": msgpack.ExtType(2, b"\x00" * 7)})), "not whole doubles"),
    (_record(_state("sample_ring", {"values": [1.0, 2.0]})), "sample_ring.values"),
    (_record(_state("window_segment", {"segment": {}, "lc": _state("sample_ring", {})})), "window_segment.lc"),
    (_record(_state("window_segment", {"last_seen": 1.0})), "required field 'segment'"),
    (_record(_state("lifecycle", {"x": {1.5: 2}})), "unknown field that is not plain data"),
    (_record([msgpack.ExtType(3, b"x"), 1]), "extension type 3"),
    (_record(_state("lifecycle", {}) + ["extra"]), "not [tag, version, fields]"),
    (MAGIC + b"\x91" * 5000 + b"\xc0", "malformed"),  # nested deeper than the decoder goes
])
def test_forged_state_records_are_refused(record, reason):
    with pytest.raises(StateDecodeError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        state_codec.loads(record)
    assert state_codec.StateCodec()._loads(record) is None


def test_decoding_never_imports_what_a_record_names():
    name = "xml.dom.minidom"
    sys.modules.pop(name, None)
    with pytest.raises(StateDecodeError, match="unknown state tag"):
        state_codec.loads(_record(_state(name, {"x": 1})))
    with pytest.raises(StateDecodeError):
        state_codec.loads(_pickle(_call(_global(name, "parseString"), _str("<a/>"))))
    assert name not in sys.modules


def test_an_older_record_gets_defaults_and_a_newer_one_keeps_what_this_release_knows(caplog):
    older = state_format.loads(_record(_state("lifecycle", {"status": "firing"})))
    assert older == Lifecycle(status="firing")
    caplog.set_level(logging.WARNING, "semwatch.state")
    newer = _record(_state("lifecycle", {"status": "pending", "since": 5, "escalations": [1, 2]}, version=7))
    for _ in range(3):
        assert state_format.loads(newer) == Lifecycle(status="pending", since=5)
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("escalations" in w for w in warnings) == 1, warnings  # once, not per record
    assert sum("version 7" in w for w in warnings) == 1, warnings


# -- the new format round-trips exactly ------------------------------------------------------------
def test_awkward_values_round_trip_exactly():
    segment = {"app": "caf\u00e9-\U0001f600", "route": "lone \udc80 surrogate", "model": ""}
    state = WindowState(segment=segment, last_seen=-0.0, active=True, key="threshold|x",
                        buckets={-3: Bucket(n=2**63 - 1, total=math.inf, sketch={0: 1, -7: 2},
                                            samples=[["r", "e"]]),
                                 4: Bucket(total=-math.inf)},
                        closed=None, value=math.nan, volume=-1)
    state.lc.peak = 5e-324
    again = state_codec.loads(state_codec.dumps(state))
    assert same_state(again, state)
    assert list(again.buckets) == [-3, 4] and math.copysign(1.0, again.last_seen) == -1.0
    ring = SampleRing.empty(4)
    ring.add(math.nan, 1.0, 0)
    ring.add(2.5, 2.0, 0)
    assert same_state(state_codec.loads(state_codec.dumps(ring)), ring)


@dataclass(slots=True)
class _Unregistered(PlainState):
    n: int = 0


def test_writing_refuses_what_a_record_cannot_hold():
    with pytest.raises(StateEncodeError, match="builtins.set"):
        state_format.dumps(Lifecycle(status={"x"}))  # type: ignore[arg-type]
    with pytest.raises(StateEncodeError, match="numpy"):
        state_format.dumps(Lifecycle(peak=np.float64(1.0)))
    with pytest.raises(StateEncodeError, match="array\\('q'\\)"):
        state_format.dumps(SampleRing(values=array("q", [1])))
    with pytest.raises(StateEncodeError, match="@state_type"):
        state_format.dumps(_Unregistered())


def test_registration_takes_slotted_state_dataclasses_under_unique_plain_tags():
    with pytest.raises(TypeError, match="@dataclass\\(slots=True\\)"):
        state_type("codec_test_plain")(dict)
    with pytest.raises(ValueError, match="not a module path"):
        state_type("semwatch.engine.core.EngineClock")
    with pytest.raises(ValueError, match="already taken"):
        state_type("lifecycle")(_Unregistered)
    assert "codec_test_plain" not in STATE_TYPES and STATE_TYPES["lifecycle"] is Lifecycle


# -- changelogs of the previous release -------------------------------------------------------------
# Module paths of the state classes before the package refactor (the classes and fields are the same).
PREVIOUS_PATHS = {
    "engine_clock": "semwatch.engine", "lifecycle": "detectors.lifecycle",
    "scope_history": "detectors.changes", "sample_ring": "detectors.robust_baseline",
    "daily_baseline": "detectors.robust_baseline", "window_bucket": "rules.threshold",
    "window_segment": "rules.threshold", "run_outlier_run": "detectors.numeric_spike",
    "run_outlier_segment": "detectors.numeric_spike", "rate_spike_segment": "detectors.numeric_spike",
    "refusal_baseline": "detectors.refusal_spike", "refusal_spike_segment": "detectors.refusal_spike",
    "wrong_entity_run": "detectors.wrong_entity",
}


#: Detector types of the previous release (its changelog holds only their state).
PREVIOUS_TYPES = {"false_refusal_spike", "wrong_entity_action", "wrong_entity_rate", "run_outlier",
                  "runaway_loop", "rate_spike", "threshold"}


@pytest.fixture(scope="module")
def halfway():
    return engine_halfway(types=PREVIOUS_TYPES)


def _pickled_by_the_previous_release(values: dict, monkeypatch) -> dict[str, bytes]:
    with monkeypatch.context() as m:
        for tag, module in PREVIOUS_PATHS.items():
            cls = STATE_TYPES[tag]
            fake = sys.modules.get(module) or types.ModuleType(module)
            m.setitem(sys.modules, module, fake)
            m.setattr(fake, cls.__name__, cls, raising=False)
            m.setattr(cls, "__module__", module)
        return {k: pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL) for k, v in values.items()}


def test_a_changelog_of_the_previous_release_recovers_and_carries_on_identically(halfway, monkeypatch):
    config, original, rest = halfway
    # The previous release kept no other state (e.g. no per-app refusal learner).
    previous = {k: v for k, v in original.data.items() if tag_of(type(v)) in PREVIOUS_PATHS}
    # ... and its one engine clock (clocks are per app now: it decodes and is ignored).
    from semwatch.engine.core import EngineClock
    previous["__engine__"] = EngineClock(max_ts=max(st.max_ts for st in original.data.values()
                                                    if type(st).__name__ == "AppClock"))
    blobs = _pickled_by_the_previous_release(previous, monkeypatch)
    assert b"detectors.numeric_spike" in b"".join(blobs.values())
    recovered = {k: state_codec.loads(b) for k, b in blobs.items()}
    covered = {type(v).__name__ for v in recovered.values()}
    assert covered >= {"EngineClock", "ScopeHistory", "RunState", "OutlierState", "RateState",
                       "RefusalSpikeState", "BaselineCounts", "WindowState"}, covered
    for key, value in previous.items():
        assert same_state(recovered[key], value), key
        assert state_codec.dumps(recovered[key]).startswith(MAGIC)  # its next write: the new format
    engine = config.build_engine(data=recovered)

    def tail(e):
        return [i.model_dump(mode="json") for ev in rest[:3000] for i in e.process(ev)]

    import copy
    expected = tail(config.build_engine(data=copy.deepcopy(previous)))
    assert tail(engine) == expected


def test_the_legacy_whitelist_is_exact():
    allowed = state_codec._LegacyUnpickler
    for module, name in [("detectors.numeric_spike", "Engine"), ("semwatch.engine.core", "Engine"),
                         ("detectors", "numeric_spike"), ("array", "array.__class__"),
                         ("semwatch.engine.lifecycle", "Lifecycle.__init__.__globals__"),
                         ("copyreg", "_reconstructor"), ("builtins", "object")]:
        with pytest.raises(pickle.UnpicklingError, match="refuses"):
            allowed.find_class(allowed.__new__(allowed), module, name)
