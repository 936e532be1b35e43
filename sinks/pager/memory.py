"""What one target has been given, per incident dedup key: the pager's dedup memory.

A :class:`KeyState` is small and JSON-serialisable: the ledger (:mod:`sinks.pager.ledger`) stores
one per target and dedup key, so a restarted pager, even one whose consumer group lost its
offsets and re-reads the whole incidents topic, knows what it already paged.

Rules, per target and dedup key (the incident ids are deterministic: a record that comes again,
from a redelivery or a worker's replay, carries the same id):

- a record whose ``(event_action, incident_id)`` was delivered before is a duplicate;
- a trigger while the key is open is a duplicate (the target already has the problem);
- once :data:`HISTORY` records of a key are remembered, one older in event time than all of them
  is a duplicate too (history from before what is remembered, e.g. a topic re-read from the start);
- anything else is sent, resolves included: a resolve the target did not need is harmless, a lost
  one leaves an incident open for good.

An open key also remembers the problem it was paged under and its severity: for a target that
pages once per problem, the open keys of a ``group_key`` are the problem's open incidents.

>>> from semwatch.contract import Incident
>>> def rec(action, id, at):
...     return Incident(incident_id=id, dedup_key="d/1", event_action=action, severity="SEV-2",
...                     kind="cost_spike", detector="c", summary="s", segment={}, window_start=at,
...                     window_end=at, detected_at=at)
>>> opened = KeyState().after(rec("trigger", "t1", "2026-01-05T10:00:00Z"))
>>> opened.verdict(rec("trigger", "t2", "2026-01-05T10:05:00Z"))
'open'
>>> closed = opened.after(rec("resolve", "r1", "2026-01-05T10:20:00Z"))
>>> closed.verdict(rec("trigger", "t1", "2026-01-05T10:00:00Z")), closed.verdict(rec("trigger", "t3", "2026-01-05T11:00:00Z"))
('duplicate', 'send')
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional

from semwatch.contract import Incident, parse_ts

#: Records remembered per target and dedup key (with their event time).
HISTORY = 16


@dataclass(frozen=True)
class KeyState:
    open: bool = False
    # (event_action, incident_id, detected_at in epoch seconds), oldest first.
    history: tuple[tuple[str, str, float], ...] = ()
    # The open trigger as a record: what a target rebuilds its own state from after a restart.
    record: Optional[dict[str, Any]] = None
    # The problem the key was paged under (records.problem_key) and its severity, while open: a
    # target that pages once per problem resolves the problem when its last open member resolves.
    group_key: Optional[str] = None
    severity: Optional[str] = None

    def verdict(self, inc: Incident) -> str:
        """``send``, ``duplicate``, or ``open`` (a trigger for a key that is open: a duplicate
        that a target may want to refresh)."""
        if inc.event_action == "trigger" and self.open:
            return "open"
        if any(a == inc.event_action and i == inc.incident_id for a, i, _ in self.history):
            return "duplicate"
        if len(self.history) >= HISTORY and parse_ts(inc.detected_at) < min(t for _, _, t in self.history):
            return "duplicate"
        return "send"

    def after(self, inc: Incident, group_key: Optional[str] = None) -> "KeyState":
        """The state once ``inc`` was delivered (or, for a resolve, refused: the key is over);
        ``group_key``: the problem it was paged under."""
        trigger = inc.event_action == "trigger"
        history = (*self.history, (inc.event_action, inc.incident_id, parse_ts(inc.detected_at)))[-HISTORY:]
        return replace(self, open=trigger, history=history, record=inc.to_dict() if trigger else None,
                       group_key=group_key if trigger else None, severity=inc.severity if trigger else None)

    def to_json(self) -> dict[str, Any]:
        return {"open": self.open, "history": [list(h) for h in self.history], "record": self.record,
                "group_key": self.group_key, "severity": self.severity}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "KeyState":
        return cls(open=bool(data["open"]), history=tuple((str(a), str(i), float(t)) for a, i, t in data["history"]),
                   record=data.get("record"), group_key=data.get("group_key"), severity=data.get("severity"))


@dataclass
class DeliveredKeys:
    """One target's :class:`KeyState` per dedup key. Open keys are always kept; of the closed ones
    the ``max_closed`` most recently used (a closed key that is forgotten can be paged again if
    its old records are read again)."""

    max_closed: int = 10000
    _keys: "OrderedDict[str, KeyState]" = field(default_factory=OrderedDict)
    _closed: int = 0
    _groups: dict[str, set[str]] = field(default_factory=dict)  # group_key -> open dedup keys

    def get(self, dedup_key: str) -> KeyState:
        return self._keys.get(dedup_key) or KeyState()

    def put(self, dedup_key: str, state: KeyState) -> None:
        old = self._keys.pop(dedup_key, None)
        self._closed += (not state.open) - (old is not None and not old.open)
        if old is not None and old.open and old.group_key:
            members = self._groups.get(old.group_key, set())
            members.discard(dedup_key)
            if not members:
                self._groups.pop(old.group_key, None)
        if state.open and state.group_key:
            self._groups.setdefault(state.group_key, set()).add(dedup_key)
        self._keys[dedup_key] = state
        if self._closed > self.max_closed:
            for key, st in self._keys.items():  # the least recently used closed key
                if not st.open:
                    del self._keys[key]
                    self._closed -= 1
                    break

    def items(self) -> list[tuple[str, KeyState]]:
        return list(self._keys.items())

    def open_keys(self) -> Iterator[tuple[str, KeyState]]:
        return ((k, s) for k, s in self._keys.items() if s.open)

    def open_members(self, group_key: str) -> dict[str, KeyState]:
        """The open dedup keys paged under ``group_key``, with their states."""
        return {k: self._keys[k] for k in sorted(self._groups.get(group_key, ()))}

    def __len__(self) -> int:
        return len(self._keys)


def encode(target: str, dedup_key: str, state: KeyState) -> tuple[bytes, bytes]:
    """The ledger record (key, value) for one target and dedup key."""
    value = {"v": 1, "target": target, "dedup_key": dedup_key, **state.to_json()}
    return f"{target}|{dedup_key}".encode(), json.dumps(value, separators=(",", ":")).encode()


def decode(value: bytes) -> tuple[str, str, KeyState]:
    """A ledger record value -> (target, dedup_key, state); ValueError when it is not one."""
    try:
        data = json.loads(value)
        return str(data["target"]), str(data["dedup_key"]), KeyState.from_json(data)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"not a pager ledger record: {exc}") from None
