"""What changed recently: per (app, route) history of prompt_version, model, route and provider.

A new value of a tracked field in a scope is a change ``{field, from, to, first_seen}``. An incident
in a segment lists the changes of its scope seen within ``lookback_s`` before the incident window
(and up to its detection), newest first — the first thing a paged human asks.

State is plain data (dicts of small lists), kept in the engine's store under ``__changes__`` keys so
it survives restarts like any detector state.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from semwatch.engine.state import PlainState, key_part, state_type
from semwatch.contract import SuspectedChange, format_ts, RunEvent

TRACKED = ("prompt_version", "model", "route", "provider")
MAX_VALUES = 16  # per field and scope: a hostile stream cannot grow this without bound
# Values first seen within this long of a scope's first event are its starting configuration
# (several routes or models run side by side), not changes.
WARMUP_S = 1800.0
# Scopes kept at most (least recently seen go first): hostile route/app cardinality stays bounded.
MAX_SCOPES = 20000


@state_type("scope_history")
@dataclass(slots=True)
class ScopeHistory(PlainState):
    # field -> list of [value, first_seen, last_seen], oldest first
    values: dict[str, list[list]] = field(default_factory=dict)
    # recorded changes: [field, from, to, first_seen]
    changes: list[list] = field(default_factory=list)
    last_seen: float = 0.0
    first_seen: Optional[float] = None


def _scope_key(app: str, route: Optional[str]) -> str:
    """``__changes__|<app>|<route>``, or ``|*`` for the whole app: values escaped like segment keys,
    and a route named ``*`` apart from the whole app."""
    part = "*" if route is None else ("\\*" if route == "*" else key_part(route))
    return f"__changes__|{key_part(app)}|{part}"


class ChangeTracker:
    def __init__(self, lookback_s: float, get: Callable[[str], Optional[ScopeHistory]],
                 put: Callable[[str, ScopeHistory], None],
                 delete: Optional[Callable[[str], None]] = None, max_scopes: int = MAX_SCOPES):
        self.lookback_s = lookback_s
        self._get = get
        self._put = put
        self._delete = delete
        self.max_scopes = max_scopes
        self._lru: OrderedDict[str, None] = OrderedDict()  # scope keys, least recently seen first

    def reset_index(self, keys: Iterable[str]) -> None:
        """The scope keys in the store, least recently seen first (after recovery)."""
        self._lru = OrderedDict((k, None) for k in keys)

    @staticmethod
    def scope_keys(segment: dict[str, str]) -> list[str]:
        """Scopes that can explain a segment: its app+route and the whole app."""
        app = segment.get("app", "")
        keys = [_scope_key(app, None)]
        if "route" in segment:
            keys.insert(0, _scope_key(app, segment["route"]))
        return keys

    def observe(self, event: RunEvent) -> None:
        for key, fields in ((_scope_key(event.app, event.route or ""), TRACKED[:2] + TRACKED[3:]),
                            (_scope_key(event.app, None), TRACKED)):
            hist = self._get(key)
            created = hist is None
            lru = self._lru
            if hist is None:
                while len(lru) >= self.max_scopes:  # make room: forget the least recently seen
                    if self._delete is None:
                        break
                    self._delete(lru.popitem(last=False)[0])
                if len(lru) >= self.max_scopes:
                    continue
                hist = ScopeHistory(first_seen=event.ts)
                lru.pop(key, None)  # swept earlier: back as the most recent
                lru[key] = None
            else:
                try:
                    lru.move_to_end(key)
                except KeyError:
                    lru[key] = None
            dirty = created
            for f in fields:
                value = getattr(event, f, None)
                if value is None:
                    continue
                dirty |= self._note(hist, f, str(value), event.ts)
            if event.ts > hist.last_seen + 60:  # coarse, so that idle scopes can expire cheaply
                hist.last_seen = event.ts
                dirty = True
            if dirty:
                self._put(key, hist)

    def _note(self, hist: ScopeHistory, f: str, value: str, ts: float) -> bool:
        seen = hist.values.setdefault(f, [])
        for entry in seen:
            if entry[0] == value:
                if ts > entry[2] + 60:
                    entry[2] = ts
                    return True
                return False
        warm = hist.first_seen is None or ts - hist.first_seen >= WARMUP_S
        if seen and warm:
            # The value it replaces: the one most recently active before this one appeared.
            previous = max(seen, key=lambda e: e[2])[0]
            hist.changes.append([f, previous, value, ts])
            del hist.changes[:-MAX_VALUES]
        seen.append([value, ts, ts])
        if len(seen) > MAX_VALUES:
            seen.sort(key=lambda e: e[2])
            del seen[0]
        return True

    def suspected(self, segment: dict[str, str], before: float, now: float) -> list[SuspectedChange]:
        out: dict[tuple, SuspectedChange] = {}
        for key in self.scope_keys(segment):
            hist = self._get(key)
            if hist is None:
                continue
            for f, old, new, first_seen in hist.changes:
                if before - self.lookback_s <= first_seen <= now:
                    # One change seen by both scopes is one change: the app scope names another
                    # "from" (the value last active on any route), the route's own scope comes first.
                    ident = (f, new, first_seen)
                    if ident not in out:
                        out[ident] = SuspectedChange(field=f, from_=old, to=new,
                                                     first_seen=format_ts(first_seen))
        return sorted(out.values(), key=lambda c: c.first_seen, reverse=True)[:8]
