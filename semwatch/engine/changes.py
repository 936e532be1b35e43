"""What changed recently: per (app, route) history of prompt_version, model, route and provider.

A new value of a tracked field in a scope is a change ``{field, from, to, first_seen}``. An incident
in a segment lists the changes of its scope seen within ``lookback_s`` before the incident window
(and up to its detection), newest first — the first thing a paged human asks. :meth:`ChangeTracker.containment`
then picks the one to roll back (see :func:`rank_change`).

State is plain data (dicts of small lists), kept in the engine's store under ``__changes__`` keys so
it survives restarts like any detector state.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from semwatch.contract import Containment, RunEvent, SuspectedChange, format_ts
from semwatch.engine.formatting import duration
from semwatch.engine.state import PlainState, key_part, state_type

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
                 delete: Optional[Callable[[str], None]] = None, max_scopes: int = MAX_SCOPES,
                 established: Optional[Callable[[str], bool]] = None):
        self.lookback_s = lookback_s
        self._get = get
        self._put = put
        self._delete = delete
        self.max_scopes = max_scopes
        # Scopes of apps still on probation (few events so far) are kept apart, in a tenth of the
        # room: a flood of new hostile app or route values never pushes out the history of apps
        # that have earned it (see semwatch/engine/core.py).
        self._established = established or (lambda app: True)
        self._lru: OrderedDict[str, None] = OrderedDict()  # scope keys, least recently seen first
        self._probation: OrderedDict[str, None] = OrderedDict()

    def reset_index(self, keys: Iterable[str]) -> None:
        """The scope keys in the store, least recently seen first (after recovery)."""
        self._lru = OrderedDict((k, None) for k in keys)
        self._probation = OrderedDict()

    def sweep(self, horizon: float) -> int:
        """Forget scopes last seen before ``horizon``; returns how many."""
        gone = 0
        for lru in (self._probation, self._lru):
            for key in list(lru):
                hist = self._get(key)
                if hist is not None and hist.last_seen >= horizon:
                    break
                del lru[key]
                if hist is not None and self._delete is not None:
                    self._delete(key)
                    gone += 1
        return gone

    @staticmethod
    def scope_keys(segment: dict[str, str]) -> list[str]:
        """Scopes that can explain a segment: its app+route and the whole app."""
        app = segment.get("app", "")
        keys = [_scope_key(app, None)]
        if "route" in segment:
            keys.insert(0, _scope_key(app, segment["route"]))
        return keys

    def observe(self, event: RunEvent) -> None:
        established = self._established(event.app)
        lru = self._lru if established else self._probation
        cap = self.max_scopes if established else max(1, self.max_scopes // 10)
        for key, fields in ((_scope_key(event.app, event.route or ""), TRACKED[:2] + TRACKED[3:]),
                            (_scope_key(event.app, None), TRACKED)):
            hist = self._get(key)
            created = hist is None
            if hist is None:
                while len(lru) >= cap:  # make room: forget the least recently seen of its class
                    if self._delete is None:
                        break
                    self._delete(lru.popitem(last=False)[0])
                if len(lru) >= cap:
                    continue
                hist = ScopeHistory(first_seen=event.ts)
                lru.pop(key, None)  # swept earlier: back as the most recent
                lru[key] = None
            else:
                if key in lru:
                    lru.move_to_end(key)
                else:  # an app that graduated from probation, or an index rebuilt after recovery
                    self._probation.pop(key, None)
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

    def containment(self, segment: dict[str, str], window_start: float,
                    detected_at: float) -> Optional[Containment]:
        """The change to roll back for an incident: the best ranked by :func:`rank_change`, among
        the changes :meth:`suspected` would list that nothing has superseded yet."""
        return _containment(self, segment, window_start, detected_at)

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


#: Containment ranking: a change this long before the window start keeps half its timing weight.
TIMING_HALF_LIFE_S = 1800.0
#: A change up to this long after the window start can still be the cause (the window starts at the
#: first anomalous evidence, which may be an unlucky ordinary event just before the change).
AFTER_START_SLACK_S = 300.0


def rank_change(change: list, scope_key: str, segment: dict[str, str], window_start: float,
                detected_at: float) -> float:
    """How well one change explains an incident, 0..1: timing x scope x value.

    * timing: 1 for a change at the window start, halving every ``TIMING_HALF_LIFE_S`` before it
      (the change closest before the spike explains it best); a change up to
      ``AFTER_START_SLACK_S`` after the start keeps 0.5, later ones (seen after the evidence began)
      0.1;
    * scope: a change seen on the incident's own route counts fully, an app-wide one 0.6;
    * value: the change's new value is exactly the incident's segment value of that field
      (``prompt_version: v8`` in both) 1, another value of a field the segment names 0.2 (the
      incident is not on that value), a field the segment does not name 0.5.

    >>> round(rank_change(["prompt_version", "v7", "v8", 900.0], "__changes__|a|r",
    ...                   {"app": "a", "route": "r", "prompt_version": "v8"}, 1080.0, 1200.0), 3)
    0.933
    """
    f, _old, new, first_seen = change
    lead = window_start - first_seen
    if lead >= 0:
        timing = 0.5 ** (lead / TIMING_HALF_LIFE_S)
    elif -lead <= AFTER_START_SLACK_S:
        timing = 0.5
    else:
        timing = 0.1 if first_seen <= detected_at else 0.0
    scope = 0.6 if scope_key.endswith("|*") else 1.0
    if f in segment and segment[f]:
        value = 1.0 if segment[f] == new else 0.2
    else:
        value = 0.5
    return timing * scope * value


#: A change's value unseen this long while another value of the field was seen: moved away from.
SUPERSEDED_AFTER_S = 180.0


def _superseded(hist: ScopeHistory, change: list) -> bool:
    """The scope moved away from this change's value since (rolled back, or changed again): another
    value of the field was seen well after it was last seen. Values a scope sees side by side (a
    canary, two routes of an app) are both seen within a minute or two."""
    f, _old, new, _first_seen = change
    seen = {entry[0]: entry[2] for entry in hist.values.get(f, ())}
    if new not in seen:
        return True
    others = [last for value, last in seen.items() if value != new]
    return bool(others) and max(others) - seen[new] > SUPERSEDED_AFTER_S


def _containment(tracker: ChangeTracker, segment: dict[str, str], window_start: float,
                 detected_at: float) -> Optional[Containment]:
    ranked: list[tuple[float, float, str, list]] = []
    seen: set[tuple] = set()
    for key in tracker.scope_keys(segment):
        hist = tracker._get(key)
        if hist is None:
            continue
        for change in hist.changes:
            f, old, new, first_seen = change
            if not (window_start - tracker.lookback_s <= first_seen <= detected_at):
                continue
            if (f, new, first_seen) in seen or _superseded(hist, change):
                continue
            seen.add((f, new, first_seen))
            ranked.append((rank_change(change, key, segment, window_start, detected_at), first_seen, key, change))
    ranked = [r for r in ranked if r[0] > 0.0]
    if not ranked:
        return None
    ranked.sort(key=lambda r: (-r[0], -r[1], r[2]))
    score, _, key, (f, old, new, first_seen) = ranked[0]
    _, app, route = key.split("|", 2)
    scope = {"app": app} if route == "*" else {"app": app, "route": route}
    where = "/".join(scope.values())
    lead = window_start - first_seen
    # A change after the window start (the first anomalous evidence may precede it): say how long
    # before the detection it came.
    when = (f"changed {duration(lead)} before the spike" if lead >= 0
            else f"changed {duration(detected_at - first_seen)} before detection")
    return Containment(field=f, current=new, rollback_to=old, scope=scope, changed_at=format_ts(first_seen),
                       lead_s=round(lead, 3), rank_score=round(score, 4) if math.isfinite(score) else 0.0,
                       alternatives=len(ranked) - 1,
                       summary=f"roll back {f} {new} -> {old} on {where} ({when})")
