"""Plain-data state classes: slotted dataclasses that pickle small and unpickle old records.

Every piece of detector state (a segment's windows, a run's totals, a baseline) is a dataclass
declared with ``@dataclass(slots=True)`` on top of :class:`PlainState`. Slots save the per-object
``__dict__`` (roughly a third of the engine's memory per active segment), and ``__setstate__``
keeps changelog records readable across versions: a record written before a field existed gets
that field's default, and one written before the class had slots (a plain ``__dict__`` state)
still loads.

>>> import pickle
>>> from semwatch.engine.lifecycle import Lifecycle
>>> lc = pickle.loads(pickle.dumps(Lifecycle(status="firing", peak=0.4)))
>>> (lc.status, lc.peak, hasattr(lc, "__dict__"))
('firing', 0.4, False)
>>> old = Lifecycle.__new__(Lifecycle); old.__setstate__({"status": "pending"})  # an old record
>>> (old.status, old.severity, old.peak)  # fields it lacks get their defaults
('pending', None, 0.0)
"""

from __future__ import annotations

import dataclasses
from typing import Any


class PlainState:
    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        for f in dataclasses.fields(self):  # defaults first: older records lack newer fields
            if f.default is not dataclasses.MISSING:
                object.__setattr__(self, f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                object.__setattr__(self, f.name, f.default_factory())
        parts = state if isinstance(state, tuple) else (state,)
        for part in parts:  # (dict state, slot state) from pickle, or a plain dict
            for name, value in (part or {}).items():
                object.__setattr__(self, name, value)
