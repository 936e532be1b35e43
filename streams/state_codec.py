"""The changelog codec for detector state: pickle, restricted to semwatch's own plain-data classes.

Detector state is small dataclasses of numbers, strings, lists and dicts. The changelog topic is
internal, but a restricted unpickler means a forged record on it cannot run code in a worker.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from faust.serializers import codecs

_ALLOWED_MODULE_PREFIXES = ("detectors.", "rules.", "semwatch.", "collections", "river.", "numpy")
_ALLOWED_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "float", "int", "complex", "bytes",
                     "bytearray", "str", "slice", "range", "bool", "object", "getattr"}
# Plain-data reconstructors: copyreg for slotted/old-style objects, array for the sample rings of
# semwatch/engine/baselines.py and detectors/run_outlier.py, runaway_loop.py, rate_spike.py.
_ALLOWED_GLOBALS = {("copyreg", "_reconstructor"), ("array", "array"), ("array", "_array_reconstructor")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _ALLOWED_BUILTINS - {"getattr"}:
            return super().find_class(module, name)
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module.startswith(_ALLOWED_MODULE_PREFIXES) or module in ("collections", "numpy"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"state codec refuses {module}.{name}")


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    return _RestrictedUnpickler(io.BytesIO(data)).load()


class StateCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return loads(s)


CODEC_NAME = "semwatch-state"
codecs.register(CODEC_NAME, StateCodec())
