"""The detection engine: runs every configured detector and rule over events in event time.

The same engine object serves the Faust worker (one engine per partition, its state mapping backed
by a changelogged table) and offline replay (one engine, a plain dict). It holds no state of its own
that cannot be derived from that mapping: its indexes are rebuilt from it.

Time is kept per app (the partition key), so no app's clock can hurt another's detection:

- Each app has its own event-time clock (:class:`AppClock`): lateness, windows and ticks of an
  app's segments follow that app's events only. A producer whose clock runs fast (or one event
  dated 2999) makes nothing of any other app late, and resolves or forgets nothing of theirs.
- An app that goes quiet still has to resolve its open incidents and let its idle state expire.
  An app is quiet once the partition's time has gone on ``idle_app_s`` since the app was last
  heard from; its time then goes on at the partition's pace, keeping the distance its clock had
  from the partition's when last heard. Quiet is not "its clock is behind": an app whose producer's
  clock is 20 minutes behind another's is not quiet while it sends, and its events are not made
  late. For this the partition's time counts a leap (one event far ahead of the partition, as when a
  producer with a fast clock starts sending) as at most ``idle_app_s / 2``: the apps it leaves
  behind have time to be heard from before they count as quiet.
- The partition's *robust* time (expiry) is its latest event time, except that an app whose clock
  jumps more than ``max_clock_lead_s`` ahead of it is not believed (its own clock goes on; the
  partition's does not) until the partition's time catches up: one event dated 2999 moves no other
  app's time.

Effectively-once: an app remembers the ids of its events of the last ``dedup_window_s`` of its
event time (hashed, in buckets of ``dedup_bucket_s``, at most ``dedup_max_ids`` per app); an event
seen again — redelivered after a crash, or re-sent by a producer — changes no state and raises no
incident (``stats.duplicates``).

Isolation under floods: an app is on *probation* until it has sent ``established_events`` events.
When a detector's segment cap (``max_segments``) is reached, segments of apps on probation are
evicted first, so a flood of new hostile app or route values churns only itself and never evicts
the learnt baselines of established apps; one app holds at most ``max_segments_per_app`` segments of
a detector (beyond that its new segments are refused and counted). Evictions and refusals are
counted per detector (``stats.evicted``, ``stats.refused``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, MutableMapping, Optional

from semwatch.contract import Incident, RunEvent
from semwatch.engine.changes import ChangeTracker, ScopeHistory
from semwatch.engine.detector import Context, Detector, SegmentState, StateAccess
from semwatch.engine.problems import ProblemTracker
from semwatch.engine.state import PlainState, key_part, segment_key, state_type, unescape_part

log = logging.getLogger("semwatch.engine")

CLOCK_PREFIX = "__engine__|"  # + app: that app's clock
RUN_EVICTION_SCAN = 64  # established keys an app on probation looks through for a run's state
SEEN_PREFIX = "__seen__|"  # + app + "|" + bucket: ids of that app's events in one bucket of time


@state_type("app_clock", version=2)
@dataclass(slots=True)
class AppClock(PlainState):
    """One app's event time and bookkeeping (plain data, changelogged like detector state)."""

    max_ts: float = -math.inf
    next_tick: float = -math.inf
    next_sweep: float = -math.inf
    events: int = 0  # events seen (an app is on probation until it has sent enough)
    # Version 2: the partition's time at the app's latest event (quiet time: leaps capped), and the
    # app's own time minus it then (a version 1 record has neither: its app counts as in step).
    heard_at: float = -math.inf
    lead: float = 0.0


@state_type("engine_clock")
@dataclass(slots=True)
class EngineClock(PlainState):
    """The one clock per engine of semwatch 0.1 (before clocks were kept per app). A changelog of
    that release still holds it under ``__engine__``: it decodes, and is ignored."""

    max_ts: float = -math.inf
    next_tick: float = -math.inf
    next_sweep: float = -math.inf


@state_type("seen_ids")
@dataclass(slots=True)
class SeenIds(PlainState):
    """Hashes of the event ids one app sent in one bucket of event time (the dedup memory)."""

    ids: dict = field(default_factory=dict)  # 64-bit hash -> 1


@dataclass
class EngineStats:
    events: int = 0
    late: int = 0
    duplicates: int = 0  # events seen before (same app and event_id): ignored
    expired: int = 0
    incidents: int = 0
    apps_forgotten: int = 0
    # Per detector: segments evicted under its cap, and new segments refused (per-app cap, or no
    # room); exceptions raised (its event or tick is skipped; the others go on).
    evicted: dict = field(default_factory=dict)
    refused: dict = field(default_factory=dict)
    detector_errors: dict = field(default_factory=dict)

    @property
    def refused_segments(self) -> int:
        return sum(self.refused.values())


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
    # An app not heard from while the partition's time went on this long is quiet: its time goes on
    # with the partition's. An app ahead of the partition's time by more than max_clock_lead_s
    # does not move it.
    idle_app_s: float = 600.0
    max_clock_lead_s: float = 6 * 3600.0
    # Dedup memory per app (see the module docstring).
    dedup_window_s: float = 300.0
    dedup_bucket_s: float = 10.0
    dedup_max_ids: int = 50000
    # Probation and per-app caps (see the module docstring).
    established_events: int = 200
    max_segments_per_app: int = 5000
    # At most this many new problems per detector per hour (more are counted, then summarised).
    max_new_problems_per_hour: int = 20


def event_hash(event_id: str) -> int:
    """A 64-bit hash of an event id: the dedup memory keeps these, not the ids themselves."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


class _Lru:
    """One detector's segment keys, least recently seen first, in two classes: segments of apps on
    probation (evicted first) and of established apps."""

    __slots__ = ("probation", "established")

    def __init__(self) -> None:
        self.probation: OrderedDict[str, None] = OrderedDict()
        self.established: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.probation) + len(self.established)

    def touch(self, key: str, established: bool) -> None:
        mine, other = (self.established, self.probation) if established else (self.probation, self.established)
        if key in mine:
            mine.move_to_end(key)
        else:
            other.pop(key, None)
            mine[key] = None

    def pop(self, key: str) -> None:
        self.probation.pop(key, None)
        self.established.pop(key, None)

    def oldest(self) -> Iterable[str]:
        yield from list(self.probation)
        yield from list(self.established)


class Engine(StateAccess):
    def __init__(self, detectors: list[Detector], options: EngineOptions | None = None,
                 data: MutableMapping[str, Any] | None = None,
                 enrich: Optional[Callable[..., RunEvent]] = None):
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
        self._lru: dict[str, _Lru] = {d.name: _Lru() for d in self.detectors}
        self._active: dict[str, set[str]] = {}  # app -> keys of its active segments
        self._since_tick: set[str] = set()  # keys touched since their app's last tick
        self._app_segments: dict[str, int] = {}  # app -> segments it holds, over all detectors
        self._clocks: dict[str, AppClock] = {}  # app -> its clock (the same objects as in data)
        self._robust = -math.inf  # the partition's robust event time (see the module docstring)
        self._quiet_time = -math.inf  # the partition's time that quiet is measured in (ditto)
        self._batch_apps: set[str] = set()  # apps of the batch in process_batch: none is quiet
        self.suspect_apps: set[str] = set()  # apps whose clocks ran ahead: not believed
        self._next_quiet_check = -math.inf  # robust time of the next look at quiet apps
        self._next_sweep = -math.inf  # ... and of the next sweep of idle state
        self._out: list[Incident] = []
        self.changes = ChangeTracker(self.options.change_lookback_s, self._get_raw, self._put_raw,
                                     self._delete, max((d.params.max_segments for d in self.detectors),
                                                       default=20000), established=self.established)
        self.problems = ProblemTracker(self.options.correlation_window_s, self.options.resolve_cooldown_s,
                                      self._get_raw, self._put_raw, self.options.max_new_problems_per_hour)
        self._ctx = Context(self, self.changes, self._admit)
        self._enrich_store = _RawStore(self._get_raw, self._put_raw)
        self.rebuild_indexes()

    # -- state bookkeeping ---------------------------------------------------------------------
    def clock_of(self, app: str) -> AppClock:
        clock = self._clocks.get(app)
        if clock is None:
            clock = AppClock()
            self._clocks[app] = clock
            self._put_raw(CLOCK_PREFIX + key_part(app), clock)
        return clock

    def established(self, app: str) -> bool:
        clock = self._clocks.get(app)
        return clock is not None and clock.events >= self.options.established_events

    @property
    def robust_time(self) -> float:
        """The partition's event time, which no single app's runaway clock can move."""
        return self._robust

    def _note_time(self, app: str, ts: float) -> None:
        if self._robust > -math.inf and ts > self._robust + self.options.max_clock_lead_s:
            self.suspect_apps.add(app)  # far ahead of everyone else: not believed (yet)
            return
        self.suspect_apps.discard(app)
        if ts > self._robust:
            if self._robust > -math.inf:
                # A leap counts as at most half of idle_app_s towards other apps' quiet time.
                self._quiet_time += min(ts - self._robust, self.options.idle_app_s / 2)
            else:
                self._quiet_time = ts
            self._robust = ts

    def rebuild_indexes(self) -> None:
        """Derive the indexes from the state mapping (after recovery)."""
        for name in self._lru:
            self._lru[name] = _Lru()
        self._active.clear()
        self._since_tick.clear()
        self._app_segments.clear()
        self._clocks.clear()
        self._robust = -math.inf
        self.suspect_apps = set()
        entries, scopes = [], []
        for key, st in list(self.data.items()):
            if isinstance(st, AppClock) and key.startswith(CLOCK_PREFIX):
                self._clocks[unescape_part(key[len(CLOCK_PREFIX):])] = st
            elif isinstance(st, SegmentState):
                name = key.split("|", 1)[0]
                if name in self._lru:
                    entries.append((st.last_seen, name, key, st.active, st.segment.get("app", "")))
            elif isinstance(st, ScopeHistory):
                scopes.append((st.last_seen, key))
        # The robust time again: the latest clock that is not far ahead of the median one.
        times = sorted(c.max_ts for c in self._clocks.values() if c.max_ts > -math.inf)
        if times:
            median = times[len(times) // 2]
            self._robust = max(t for t in times if t <= median + self.options.max_clock_lead_s)
            self.suspect_apps = {a for a, c in self._clocks.items() if c.max_ts > self._robust}
        self._quiet_time = max((c.heard_at for c in self._clocks.values() if c.heard_at > -math.inf),
                               default=self._robust)
        self.changes.reset_index(key for _, key in sorted(scopes))
        self.problems.reset_index(self.data.items())
        for _, name, key, active, app in sorted(entries):
            self._lru[name].touch(key, self.established(app))
            self._app_segments[app] = self._app_segments.get(app, 0) + 1
            if active:
                self._active.setdefault(app, set()).add(key)

    def _key(self, detector: Detector, segment: dict[str, str]) -> str:
        return f"{detector.name}|{segment_key(segment.values())}"

    def _get_raw(self, key: str) -> Any:
        return self.data.get(key)

    def _put_raw(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)
        self.deleted.discard(key)

    def _delete(self, key: str) -> None:
        st = self.data.pop(key, None)
        if st is not None:
            self.deleted.add(key)
            self.dirty.discard(key)
            if isinstance(st, SegmentState):
                app = st.segment.get("app", "")
                left = self._app_segments.get(app, 1) - 1
                if left > 0:
                    self._app_segments[app] = left
                else:
                    self._app_segments.pop(app, None)
                active = self._active.get(app)
                if active is not None:
                    active.discard(key)

    def get_or_create(self, detector, segment, factory, now):
        key = f"{detector.name}|{segment_key(segment.values())}"
        st = self.data.get(key)
        lru = self._lru[detector.name]
        app = segment.get("app", "")
        established = self.established(app)
        if st is None:
            if self._app_segments.get(app, 0) >= self.options.max_segments_per_app * len(self.detectors):
                return self._refuse(detector)
            if len(lru) >= detector.params.max_segments and not self._evict_one(detector, established):
                return self._refuse(detector)
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
            self._app_segments[app] = self._app_segments.get(app, 0) + 1
        if now > st.last_seen:
            st.last_seen = now
        lru.touch(key, established)
        self._touch(key)
        return st

    def _refuse(self, detector: Detector) -> None:
        self.stats.refused[detector.name] = self.stats.refused.get(detector.name, 0) + 1
        return None

    def get(self, detector, segment):
        return self.data.get(self._key(detector, segment))

    def drop(self, detector, segment):
        key = self._key(detector, segment)
        self._lru[detector.name].pop(key)
        self._delete(key)

    def changed(self, detector, state):
        self._touch(state.key or self._key(detector, state.segment))

    def _touch(self, key: str) -> None:
        self.dirty.add(key)
        if self.deleted:
            self.deleted.discard(key)
        self._since_tick.add(key)

    def _evict_one(self, detector: Detector, established: bool) -> bool:
        """Make room under the segment cap: forget the least recently seen idle segment, of an app
        on probation first. An app on probation never evicts an established app's learnt state,
        only the state of a single run of it (runs end; baselines are what took days to learn)."""
        self._settle_touched()
        lru = self._lru[detector.name]
        pools = ((lru.probation, False), (lru.established, False)) if established else \
            ((lru.probation, False), (lru.established, True))
        for pool, runs_only in pools:
            for n, key in enumerate(pool):
                if runs_only and n >= RUN_EVICTION_SCAN:
                    break
                st = self.data.get(key)
                if st is not None and (st.active or (runs_only and "run_id" not in st.segment)):
                    continue
                del pool[key]
                self._delete(key)
                self.stats.evicted[detector.name] = self.stats.evicted.get(detector.name, 0) + 1
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
        """Events that arrived together (a worker's batch, released in event-time order across
        apps): no app of the batch counts as quiet while it is processed, however far another
        app's clock takes the partition's time meanwhile, and each is heard from at its end."""
        events = list(events)
        self._batch_apps = {event.app for event in events}
        try:
            for event in events:
                self._handle(event)
        finally:
            for app in self._batch_apps:
                clock = self._clocks.get(app)
                if clock is not None:
                    clock.heard_at = self._quiet_time
                    clock.lead = clock.max_ts - self._quiet_time
            self._batch_apps = set()
        return self._drain()

    def advance_to(self, ts: float) -> list[Incident]:
        """Move every app's event time to ``ts`` with no event (end of a replay, an idle stream)."""
        for app in sorted(self._clocks):
            clock = self._clocks[app]
            if ts > clock.max_ts:
                clock.max_ts = ts
                self._note_time(app, ts)
                self._put_raw(CLOCK_PREFIX + key_part(app), clock)
            self._tick(app, clock, force=True)
        self._sweep()
        if self.problems.waiting:
            self.problems.release(self._release_time, self._out.append)
        return self._drain()

    def watermark_of(self, app: str) -> float:
        clock = self._clocks.get(app)
        return (clock.max_ts if clock is not None else -math.inf) - self.options.allowed_lateness_s

    def _release_time(self, app: str) -> float:
        clock = self._clocks.get(app)
        return clock.max_ts if clock is not None else -math.inf

    def _admit(self, incident: Incident) -> None:
        self.problems.admit(incident, self._out.append)

    def _drain(self) -> list[Incident]:
        out = list(self._out)
        self._out.clear()
        self.stats.incidents += len(out)
        return out

    def _seen_before(self, app: str, event: RunEvent, clock: AppClock) -> bool:
        """Remember the event's id; True when the app sent it before (within the dedup window)."""
        o = self.options
        if o.dedup_window_s <= 0 or event.ts < clock.max_ts - o.dedup_window_s:
            return False  # older than the memory: it cannot be told apart (it is late anyway)
        h = event_hash(event.event_id)
        bucket = int(event.ts // o.dedup_bucket_s)
        prefix = SEEN_PREFIX + key_part(app) + "|"
        span = int(math.ceil(o.dedup_window_s / o.dedup_bucket_s))
        for b in range(bucket - span, bucket + span + 1):
            seen = self.data.get(prefix + str(b))
            if seen is not None and h in seen.ids:
                return True
        key = prefix + str(bucket)
        seen = self.data.get(key)
        if seen is None:
            seen = SeenIds()
        if len(seen.ids) * (2 * span + 1) < o.dedup_max_ids:
            seen.ids[h] = 1
            self._put_raw(key, seen)
        return False

    def _forget_seen(self, app: str, clock: AppClock) -> None:
        """Drop the dedup buckets of an app that fell out of its window."""
        o = self.options
        if o.dedup_window_s <= 0 or clock.max_ts == -math.inf:
            return
        prefix = SEEN_PREFIX + key_part(app) + "|"
        oldest = int((clock.max_ts - 2 * o.dedup_window_s) // o.dedup_bucket_s)
        span = int(math.ceil(o.dedup_window_s / o.dedup_bucket_s))
        for b in range(oldest - 4 * span, oldest):
            if prefix + str(b) in self.data:
                self._delete(prefix + str(b))

    def _handle(self, event: RunEvent) -> None:
        self.stats.events += 1
        app = event.app
        clock = self.clock_of(app)
        if self._seen_before(app, event, clock):
            self.stats.duplicates += 1
            return
        if self._ctx.shared:
            self._ctx.shared.clear()
        clock.events += 1
        if clock.events == self.options.established_events or clock.events % 1000 == 0:
            self._put_raw(CLOCK_PREFIX + key_part(app), clock)
        if self.enrich is not None:
            event = self.enrich(event, self._enrich_store)
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
        advanced = event.ts > clock.max_ts
        if advanced:
            clock.max_ts = event.ts
            self._note_time(app, event.ts)
        # Quiet is judged by the partition's time since an app was last heard from, not by how far
        # its clock is behind: another producer's clock running ahead must not make this app quiet
        # (its time moved on, its own events then all late). Written with the clock at its ticks.
        clock.heard_at = self._quiet_time
        clock.lead = clock.max_ts - self._quiet_time
        if advanced:
            self._tick(app, clock)
            self._move_quiet_apps()
        if self.problems.waiting:
            self.problems.release(self._release_time, self._out.append)
        self._ctx.late = False

    def _move_quiet_apps(self) -> None:
        """Quiet apps' time goes on with the partition's (checked once per tick of robust time)."""
        robust = self.robust_time
        behind = robust - self.options.idle_app_s
        if behind == -math.inf or self._next_quiet_check > robust:
            return
        self._next_quiet_check = robust + self.options.tick_s
        sweep = robust >= self._next_sweep
        if sweep:
            self._next_sweep = robust + self.options.sweep_s
        apps = list(self._clocks) if sweep else [a for a, keys in self._active.items() if keys]
        for app in apps:
            clock = self._clocks.get(app)
            if clock is None or app in self._batch_apps:
                continue
            heard = clock.heard_at if clock.heard_at > -math.inf else clock.max_ts
            # Its own time, gone on at the partition's pace since it was quiet.
            target = self._quiet_time + clock.lead - self.options.idle_app_s
            if self._quiet_time - heard <= self.options.idle_app_s or clock.max_ts >= target:
                continue
            clock.max_ts = target
            self._put_raw(CLOCK_PREFIX + key_part(app), clock)
            self._tick(app, clock)
        if sweep:
            self._sweep()
            for app in list(self._clocks):
                self._forget_app_if_idle(app, self._clocks[app])

    def _forget_app_if_idle(self, app: str, clock: AppClock) -> None:
        """An app with no state left and no events for a day is forgotten with its clock."""
        if self._app_segments.get(app) or self.robust_time - clock.max_ts < 86400.0 - self.options.idle_app_s:
            return
        if self.problems.holds(app):
            return
        self._forget_seen(app, AppClock(max_ts=math.inf))
        del self._clocks[app]
        self._delete(CLOCK_PREFIX + key_part(app))
        self.stats.apps_forgotten += 1

    def _detector_failed(self, detector: Detector, where: str, event: Optional[RunEvent]) -> None:
        n = self.stats.detector_errors.get(detector.name, 0) + 1
        self.stats.detector_errors[detector.name] = n
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ... time: a flood of one bug stays readable
            at = f" on event {event.event_id}" if event is not None else ""
            log.exception("detector %s failed in %s%s (%d times so far); skipped, stream goes on",
                          detector.name, where, at, n)

    def _settle_touched(self) -> None:
        data = self.data
        for key in self._since_tick:
            st = data.get(key)
            if st is None:
                continue
            app = st.segment.get("app", "") if isinstance(st, SegmentState) else ""
            if getattr(st, "active", False):
                self._active.setdefault(app, set()).add(key)
            else:
                active = self._active.get(app)
                if active is not None:
                    active.discard(key)
                    if not active:
                        del self._active[app]
        self._since_tick.clear()

    def _tick(self, app: str, clock: AppClock, force: bool = False) -> None:
        watermark = clock.max_ts - self.options.allowed_lateness_s
        if force or watermark >= clock.next_tick:
            clock.next_tick = watermark + self.options.tick_s
            self._put_raw(CLOCK_PREFIX + key_part(app), clock)
            self._settle_touched()
            self._ctx.now = clock.max_ts
            for key in sorted(self._active.get(app, ())):
                st = self.data.get(key)
                detector = self._by_name.get(key.split("|", 1)[0])
                if st is None or detector is None:
                    self._active.get(app, set()).discard(key)
                    continue
                try:
                    detector.advance(st, watermark, self._ctx)
                except Exception:
                    self._detector_failed(detector, "advance", None)
            self._settle_touched()
        if watermark >= clock.next_sweep:
            clock.next_sweep = watermark + self.options.sweep_s
            self._forget_seen(app, clock)

    def _sweep(self) -> None:
        """Forget idle segments, each by its own app's event time, so that state stays bounded.

        Keys are visited least recently seen first; the visit stops at the first key that is
        recent even by the partition's robust time (the apps behind it are at most idle_app_s
        behind, having been moved on, or are sending: their keys were just touched)."""
        self._settle_touched()
        robust_wm = self.robust_time - self.options.allowed_lateness_s
        for detector in self.detectors:
            ttl = detector.params.idle_ttl_s
            lru = self._lru[detector.name]
            for pool in (lru.probation, lru.established):
                for key in list(pool):
                    st = self.data.get(key)
                    if st is None:
                        del pool[key]
                        continue
                    if st.last_seen >= robust_wm - ttl + self.options.idle_app_s:
                        break
                    app = st.segment.get("app", "")
                    if st.last_seen >= self.watermark_of(app) - ttl or key in self._active.get(app, ()):
                        continue  # recent by its app's time, or open: its detector resolves it first
                    del pool[key]
                    self._delete(key)
                    self.stats.expired += 1
        self.changes.sweep(robust_wm - self.options.change_lookback_s * 2)

    def segments_active(self) -> dict[str, int]:
        return {name: len(lru) for name, lru in self._lru.items()}

    def open_incidents(self) -> list[tuple[str, str, str]]:
        """(kind, severity, detector) of every incident open in this engine's state."""
        return self.problems.open_incidents()


class _RawStore:
    """The engine's state mapping as the state store of enrichment steps (changelogged)."""

    __slots__ = ("get", "put")

    def __init__(self, get: Callable[[str], Any], put: Callable[[str, Any], None]):
        self.get, self.put = get, put
