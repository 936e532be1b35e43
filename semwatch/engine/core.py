"""The detection engine: runs every configured detector and rule over events in event time.

The same engine object serves the Faust worker (one engine per partition, its state mapping backed
by a changelogged table) and offline replay (one engine, a plain dict). It holds no state of its own
that cannot be derived from that mapping: the LRU and active-segment indexes are rebuilt from it.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, MutableMapping, Optional

from semwatch.engine.detector import Context, Detector, SegmentState, StateAccess
from semwatch.engine.problems import ProblemTracker
from semwatch.engine.changes import ChangeTracker, ScopeHistory
from semwatch.engine.state import PlainState, segment_key, state_type
from semwatch.contract import Incident, RunEvent

log = logging.getLogger("semwatch.engine")

ENGINE_KEY = "__engine__"


@state_type("engine_clock")
@dataclass(slots=True)
class EngineClock(PlainState):
    """Persisted engine bookkeeping (plain data, in the changelog like detector state)."""

    max_ts: float = -math.inf
    next_tick: float = -math.inf
    next_sweep: float = -math.inf


@dataclass
class EngineStats:
    events: int = 0
    late: int = 0
    evicted: int = 0
    expired: int = 0
    refused_segments: int = 0
    incidents: int = 0
    # Exceptions raised by a detector (its event or tick is skipped; the others go on), by name.
    detector_errors: dict = field(default_factory=dict)


@dataclass
class EngineOptions:
    allowed_lateness_s: float = 30.0
    tick_s: float = 5.0
    sweep_s: float = 600.0
    change_lookback_s: float = 6 * 3600.0
    # Problems (semwatch/engine/problems.py): related triggers this close in time share a group_key;
    # a resolve is held this long and cancelled by a re-trigger of the same incident (a bare engine
    # resolves at once; the config file's default holds resolves 10 min).
    correlation_window_s: float = 900.0
    resolve_cooldown_s: float = 0.0


class Engine(StateAccess):
    def __init__(self, detectors: list[Detector], options: EngineOptions | None = None,
                 data: MutableMapping[str, Any] | None = None,
                 enrich: Optional[Callable[[RunEvent], RunEvent]] = None):
        self.detectors = [d for d in detectors if d.params.enabled]
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique: {names}")
        self.options = options or EngineOptions()
        self.data: MutableMapping[str, Any] = {} if data is None else data
        # Fills what producers left out (refusal verdicts, prices) before detection; returns a new
        # event rather than changing the caller's (semwatch.enrich).
        self.enrich = enrich
        self.stats = EngineStats()
        self.dirty: set[str] = set()
        self.deleted: set[str] = set()
        self._by_name = {d.name: d for d in self.detectors}
        self._lru: dict[str, OrderedDict[str, None]] = {d.name: OrderedDict() for d in self.detectors}
        self._active: set[str] = set()
        # Keys touched since the last tick: their `active` flag is settled into _active at ticks.
        self._since_tick: set[str] = set()
        self._out: list[Incident] = []
        self.changes = ChangeTracker(self.options.change_lookback_s, self._get_raw, self._put_raw,
                                     self._delete, max((d.params.max_segments for d in self.detectors),
                                                       default=20000))
        self.problems = ProblemTracker(self.options.correlation_window_s, self.options.resolve_cooldown_s,
                                      self._get_raw, self._put_raw)
        self._ctx = Context(self, self.changes, self._admit)
        self._enrich_store = _RawStore(self._get_raw, self._put_raw)
        self.rebuild_indexes()

    # -- state bookkeeping ---------------------------------------------------------------------
    @property
    def clock(self) -> EngineClock:
        clock = self.data.get(ENGINE_KEY)
        if clock is None:
            clock = EngineClock()
            self._put_raw(ENGINE_KEY, clock)
        return clock

    def rebuild_indexes(self) -> None:
        """Derive the LRU and active indexes from the state mapping (after recovery)."""
        for lru in self._lru.values():
            lru.clear()
        self._active.clear()
        self._since_tick.clear()
        entries, scopes = [], []
        for key, st in list(self.data.items()):
            if isinstance(st, SegmentState):
                name = key.split("|", 1)[0]
                if name in self._lru:
                    entries.append((st.last_seen, name, key, st.active))
            elif isinstance(st, ScopeHistory):
                scopes.append((st.last_seen, key))
        self.changes.reset_index(key for _, key in sorted(scopes))
        self.problems.reset_index(self.data.items())
        for _, name, key, active in sorted(entries):
            self._lru[name][key] = None
            if active:
                self._active.add(key)

    def _key(self, detector: Detector, segment: dict[str, str]) -> str:
        return f"{detector.name}|{segment_key(segment.values())}"

    def _get_raw(self, key: str) -> Optional[ScopeHistory]:
        return self.data.get(key)

    def _put_raw(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)
        self.deleted.discard(key)

    def _delete(self, key: str) -> None:
        if self.data.pop(key, None) is not None:
            self.deleted.add(key)
            self.dirty.discard(key)
        self._active.discard(key)

    def get_or_create(self, detector, segment, factory, now):
        key = f"{detector.name}|{segment_key(segment.values())}"
        st = self.data.get(key)
        lru = self._lru[detector.name]
        if st is None:
            if len(lru) >= detector.params.max_segments and not self._evict_one(detector):
                self.stats.refused_segments += 1
                return None
            st = factory()
            # States created for one event share one segment dict per distinct segment (read-only
            # by convention): several detectors group by the same labels.
            items = tuple(segment.items())
            shared = self._ctx.shared.get(items)
            if shared is None:
                shared = self._ctx.shared[items] = dict(segment)
            st.segment = shared
            st.key = key
            self.data[key] = st
        if now > st.last_seen:
            st.last_seen = now
        try:
            lru.move_to_end(key)
        except KeyError:
            lru[key] = None
        self._touch(key)
        return st

    def get(self, detector, segment):
        return self.data.get(self._key(detector, segment))

    def drop(self, detector, segment):
        key = self._key(detector, segment)
        self._lru[detector.name].pop(key, None)
        self._delete(key)

    def changed(self, detector, state):
        self._touch(state.key or self._key(detector, state.segment))

    def _touch(self, key: str) -> None:
        self.dirty.add(key)
        if self.deleted:
            self.deleted.discard(key)
        self._since_tick.add(key)

    def _evict_one(self, detector: Detector) -> bool:
        """Make room under the segment cap: forget the least recently seen idle segment."""
        self._settle_touched()
        lru = self._lru[detector.name]
        for key in lru:
            if key not in self._active:
                del lru[key]
                self._delete(key)
                self.stats.evicted += 1
                return True
        return False

    def pop_dirty(self) -> tuple[set[str], set[str]]:
        dirty, deleted = self.dirty, self.deleted
        self.dirty, self.deleted = set(), set()
        return dirty, deleted

    # -- processing ----------------------------------------------------------------------------
    def process(self, event: RunEvent) -> list[Incident]:
        self._handle(event)
        return self._drain()

    def process_batch(self, events: Iterable[RunEvent]) -> list[Incident]:
        for event in events:
            self._handle(event)
        return self._drain()

    def advance_to(self, ts: float) -> list[Incident]:
        """Move event time to ``ts`` with no event (end of a replay, or an idle stream)."""
        clock = self.clock
        if ts - self.options.allowed_lateness_s > clock.max_ts - self.options.allowed_lateness_s:
            clock.max_ts = ts
            self._put_raw(ENGINE_KEY, clock)
        self._tick(clock, force=True)
        if self.problems.waiting:
            self.problems.release(clock.max_ts, self._out.append)
        return self._drain()

    @property
    def watermark(self) -> float:
        return self.clock.max_ts - self.options.allowed_lateness_s

    def _admit(self, incident: Incident) -> None:
        self.problems.admit(incident, self._out.append)

    def _drain(self) -> list[Incident]:
        out = list(self._out)
        self._out.clear()
        self.stats.incidents += len(out)
        return out

    def _handle(self, event: RunEvent) -> None:
        self.stats.events += 1
        if self._ctx.shared:
            self._ctx.shared.clear()
        if self.enrich is not None:
            event = self.enrich(event, self._enrich_store)
        clock = self.clock
        late = event.ts < clock.max_ts - self.options.allowed_lateness_s
        if late:
            self.stats.late += 1
        self._ctx.late = late
        self._ctx.now = event.ts if event.ts > clock.max_ts else clock.max_ts
        self.changes.observe(event)
        for detector in self.detectors:
            try:
                detector.observe(event, self._ctx)
            except Exception:  # a detector bug must not stop the stream (or loop a worker)
                self._detector_failed(detector, "observe", event)
        if event.ts > clock.max_ts:
            clock.max_ts = event.ts
            self._tick(clock)
        if self.problems.waiting:
            self.problems.release(clock.max_ts, self._out.append)
        self._ctx.late = False

    def _detector_failed(self, detector: Detector, where: str, event: Optional[RunEvent]) -> None:
        n = self.stats.detector_errors.get(detector.name, 0) + 1
        self.stats.detector_errors[detector.name] = n
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ... time: a flood of one bug stays readable
            at = f" on event {event.event_id}" if event is not None else ""
            log.exception("detector %s failed in %s%s (%d times so far); skipped, stream goes on",
                          detector.name, where, at, n)

    def _settle_touched(self) -> None:
        data, active = self.data, self._active
        for key in self._since_tick:
            st = data.get(key)
            if st is not None and st.active:
                active.add(key)
            else:
                active.discard(key)
        self._since_tick.clear()

    def _tick(self, clock: EngineClock, force: bool = False) -> None:
        watermark = clock.max_ts - self.options.allowed_lateness_s
        if force or watermark >= clock.next_tick:
            clock.next_tick = watermark + self.options.tick_s
            self._put_raw(ENGINE_KEY, clock)
            self._settle_touched()
            self._ctx.now = clock.max_ts
            for key in sorted(self._active):
                st = self.data.get(key)
                detector = self._by_name.get(key.split("|", 1)[0])
                if st is None or detector is None:
                    self._active.discard(key)
                    continue
                try:
                    detector.advance(st, watermark, self._ctx)
                except Exception:
                    self._detector_failed(detector, "advance", None)
            self._settle_touched()
        if watermark >= clock.next_sweep:
            clock.next_sweep = watermark + self.options.sweep_s
            self._settle_touched()
            self._sweep(watermark)

    def _sweep(self, watermark: float) -> None:
        """Forget idle segments (event time) so that state stays bounded."""
        for detector in self.detectors:
            horizon = watermark - detector.params.idle_ttl_s
            lru = self._lru[detector.name]
            for _ in range(len(lru)):
                key = next(iter(lru))
                st = self.data.get(key)
                if st is not None and st.last_seen >= horizon:
                    break
                if key in self._active:  # an open incident is resolved by its detector first
                    lru.move_to_end(key)
                    continue
                del lru[key]
                self._delete(key)
                self.stats.expired += 1
        horizon = watermark - self.options.change_lookback_s * 2
        for key in [k for k in self.data if k.startswith("__changes__|")]:
            if self.data[key].last_seen < horizon:
                self._delete(key)

    def segments_active(self) -> dict[str, int]:
        return {name: len(lru) for name, lru in self._lru.items()}


class _RawStore:
    """The engine's state mapping as the state store of enrichment steps (changelogged)."""

    __slots__ = ("get", "put")

    def __init__(self, get: Callable[[str], Any], put: Callable[[str, Any], None]):
        self.get, self.put = get, put
