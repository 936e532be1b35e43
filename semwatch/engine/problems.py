"""Problems, not detector hits: incidents of one problem share a ``group_key``, and nothing flaps.

An on-call engineer is woken once per problem. Detectors see one problem from several sides (a
runaway loop is a ``runaway-loop`` trigger, a ``token-burn`` trigger and a ``cost-per-route``
trigger), and a problem that wavers around a threshold resolves and triggers again. The engine
passes every incident through :class:`ProblemTracker`, which does two things in event time:

- **Grouping.** A trigger joins a problem of its app that is open, or closed less than
  ``correlation_window_s`` ago, when its scope relates to a member's: one scope contains the other
  (``{app}`` contains ``{app, route, model}``), or both name the same route of the same app. The
  problem's ``group_key`` (from its first member) goes on every member's records, with ``related``
  listing the other members; otherwise the trigger opens a new problem. Pagers page once per
  ``group_key`` and resolve it when its last member resolves.
- **No flapping.** A resolve is held for ``resolve_cooldown_s``; a trigger of the same
  ``dedup_key`` within that time cancels it and re-opens the same incident (the same
  ``incident_id``: a pager sees an update of an open incident, not a new page). Held resolves are
  released once event time passes their due time (or at the end of a replay). Any trigger of an
  open ``dedup_key`` (a detector re-sending it with a higher severity) keeps the open incident's id.

State is one small :class:`ProblemBook` per app in the engine's state mapping (plain data, so it is
changelogged and replayed like detector state). Incidents of one app always meet in one partition.

>>> contains({"app": "a"}, {"app": "a", "route": "r"}), related({"app": "a", "route": "r", "model": "m"},
...                                                          {"app": "a", "route": "r"})
(True, True)
>>> related({"app": "a", "model": "m"}, {"app": "a", "route": "r"})
False
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from semwatch.contract import Incident, parse_ts
from semwatch.engine.state import PlainState, state_type

BOOK_PREFIX = "__problems__|"
MAX_PROBLEMS = 1000  # per app: open problems plus those still inside the correlation window
MAX_MEMBERS = 50  # dedup keys listed per problem (``related`` is bounded too)


def contains(outer: dict[str, str], inner: dict[str, str]) -> bool:
    """Every label of ``outer`` has the same value in ``inner`` (empty labels name nothing)."""
    return all(inner.get(k) == v for k, v in outer.items() if v)


def related(a: dict[str, str], b: dict[str, str]) -> bool:
    """Scopes of one problem: one contains the other, or the same route of the same app."""
    if a.get("app") != b.get("app"):
        return False
    if contains(a, b) or contains(b, a):
        return True
    return bool(a.get("route")) and a.get("route") == b.get("route")


@state_type("problem_book")
@dataclass(slots=True)
class ProblemBook(PlainState):
    # [group_key, opened_at, closed_at (inf while open), [[dedup_key, segment, open?], ...]]
    problems: list = field(default_factory=list)
    # dedup_key -> [due (event time), the resolve record as a dict]
    held: dict = field(default_factory=dict)
    # dedup_key -> incident_id of its open trigger (a re-trigger within the cool-down reuses it)
    open_ids: dict = field(default_factory=dict)


class ProblemTracker:
    def __init__(self, correlation_window_s: float, resolve_cooldown_s: float,
                 get: Callable[[str], Any], put: Callable[[str, Any], None]):
        self.window = correlation_window_s
        self.cooldown = resolve_cooldown_s
        self._get, self._put = get, put
        self.stats = {"problems": 0, "reopened": 0, "grouped": 0}
        self.waiting: set[str] = set()  # apps with held resolves

    def _book(self, app: str) -> ProblemBook:
        key = BOOK_PREFIX + app
        book = self._get(key)
        if book is None:
            book = ProblemBook()
            self._put(key, book)
        return book

    # -- incidents from detectors ----------------------------------------------------------------
    def admit(self, inc: Incident, emit: Callable[[Incident], None]) -> None:
        """Take one incident from a detector; emit what the outside world should see now."""
        app = inc.segment.get("app", "")
        book = self._book(app)
        self._put(BOOK_PREFIX + app, book)
        if inc.event_action == "resolve":
            if self.cooldown <= 0:
                self._emit_resolve(book, inc, emit)
                return
            book.held[inc.dedup_key] = [parse_ts(inc.detected_at) + self.cooldown, inc.to_dict()]
            self.waiting.add(app)
            return
        if book.held.pop(inc.dedup_key, None) is not None:
            # Re-triggered within the cool-down: the same incident goes on (its resolve was never
            # sent), so a pager sees an update of an open incident, not a new page.
            self.stats["reopened"] += 1
        first_id = book.open_ids.get(inc.dedup_key)
        if first_id and first_id != inc.incident_id:  # an update of an open incident keeps its id
            inc = inc.model_copy(update={"incident_id": first_id})
        problem = self._problem_for(book, inc)
        members = problem[3]
        for m in members:
            if m[0] == inc.dedup_key:
                m[2] = True
                break
        else:
            if len(members) < MAX_MEMBERS:
                members.append([inc.dedup_key, dict(inc.segment), True])
        problem[2] = math.inf
        book.open_ids.setdefault(inc.dedup_key, inc.incident_id)
        emit(inc.model_copy(update={"group_key": problem[0],
                                    "related": sorted(m[0] for m in members if m[0] != inc.dedup_key)}))

    def _problem_for(self, book: ProblemBook, inc: Incident) -> list:
        now = parse_ts(inc.detected_at)
        for problem in book.problems:
            if problem[2] != math.inf and now - problem[2] > self.window:
                continue
            if any(m[0] == inc.dedup_key or (self.window > 0 and related(m[1], inc.segment))
                   for m in problem[3]):
                self.stats["grouped"] += 1
                return problem
        key = "problem/" + hashlib.sha256(f"{inc.dedup_key}|{now:.3f}".encode()).hexdigest()[:16]
        problem = [key, now, math.inf, []]
        book.problems.append(problem)
        self.stats["problems"] += 1
        if len(book.problems) > MAX_PROBLEMS:  # the oldest closed ones go first
            closed = [p for p in book.problems if p[2] != math.inf]
            book.problems.remove(min(closed, key=lambda p: p[2]) if closed else book.problems[0])
        return problem

    def _emit_resolve(self, book: ProblemBook, inc: Incident, emit: Callable[[Incident], None]) -> None:
        book.open_ids.pop(inc.dedup_key, None)
        group, others = self._close_member(book, inc)
        emit(inc.model_copy(update={"group_key": group, "related": others}))

    def _close_member(self, book: ProblemBook, resolve: Incident) -> tuple[Optional[str], list[str]]:
        now = parse_ts(resolve.detected_at)
        for problem in book.problems:
            for m in problem[3]:
                if m[0] == resolve.dedup_key and m[2]:
                    m[2] = False
                    if not any(o[2] for o in problem[3]):
                        problem[2] = now
                    return problem[0], sorted(o[0] for o in problem[3] if o[0] != resolve.dedup_key)
        return None, []

    # -- event time ----------------------------------------------------------------------------
    def release(self, now: float, emit: Callable[[Incident], None]) -> None:
        """Emit the held resolves that are due at event time ``now``; forget problems that closed
        more than a correlation window ago."""
        for app in sorted(self.waiting):
            book = self._get(BOOK_PREFIX + app)
            if book is None:
                continue
            changed = False
            due = sorted((v[0], k) for k, v in book.held.items() if v[0] <= now)
            for _, key in due:
                _, record = book.held.pop(key)
                self._emit_resolve(book, Incident.model_validate(record), emit)
                changed = True
            stale = [p for p in book.problems if p[2] != math.inf and now - p[2] > self.window]
            for p in stale:
                book.problems.remove(p)
                changed = True
            if not book.held:
                self.waiting.discard(app)
            if changed:
                self._put(BOOK_PREFIX + app, book)

    def reset_index(self, items: Any) -> None:
        """After recovery: the apps whose books hold resolves (``items``: (key, state) pairs)."""
        self.waiting = {key[len(BOOK_PREFIX):] for key, st in items
                        if key.startswith(BOOK_PREFIX) and isinstance(st, ProblemBook) and st.held}
