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

from semwatch.contract import Incident, format_ts, parse_ts
from semwatch.engine.state import PlainState, key_part, state_type, unescape_part

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
    # dedup_key -> [incident_id, kind, severity, detector] of its open trigger (a re-trigger
    # within the cool-down reuses the id; the open-incident gauge is read from here)
    open_ids: dict = field(default_factory=dict)
    # dedup_keys whose trigger the page budget suppressed: their resolves are not sent either
    suppressed: dict = field(default_factory=dict)


@state_type("page_budget")
@dataclass(slots=True)
class PageBudget(PlainState):
    """New problems opened per detector in the last hour of event time, and what was suppressed."""

    opened: dict = field(default_factory=dict)  # detector -> [event times of new problems]
    suppressed: dict = field(default_factory=dict)  # detector -> [count, first, last, summary open?]


BUDGET_KEY = "__problems__budget"


class ProblemTracker:
    def __init__(self, correlation_window_s: float, resolve_cooldown_s: float,
                 get: Callable[[str], Any], put: Callable[[str, Any], None],
                 max_new_problems_per_hour: int = 0):
        self.window = correlation_window_s
        self.cooldown = resolve_cooldown_s
        self.budget = max_new_problems_per_hour  # 0: no limit
        self._get, self._put = get, put
        self.stats = {"problems": 0, "reopened": 0, "grouped": 0, "suppressed": 0}
        self.suppressed_by_detector: dict[str, int] = {}
        self.waiting: set[str] = set()  # apps with held resolves
        self._books: set[str] = set()  # keys of the books in the store

    def _book(self, app: str) -> ProblemBook:
        key = BOOK_PREFIX + key_part(app)
        book = self._get(key)
        if book is None:
            book = ProblemBook()
            self._put(key, book)
        return book

    def holds(self, app: str) -> bool:
        """Whether the app has open incidents or held resolves (its book must stay)."""
        book = self._get(BOOK_PREFIX + key_part(app))
        return book is not None and bool(book.open_ids or book.held)

    def open_incidents(self) -> list[tuple[str, str, str]]:
        """(kind, severity, detector) of every open incident (held resolves still count as open)."""
        out = []
        for key in list(self._books):
            book = self._get(key)
            if book is not None:
                out.extend((v[1], v[2], v[3]) for v in book.open_ids.values())
        return out

    # -- the page budget -------------------------------------------------------------------------
    def _within_budget(self, inc: Incident, emit: Callable[[Incident], None]) -> bool:
        """Whether a trigger that opens a new problem may page; when it may not, count it and keep
        one summary incident per detector open (re-sent as the count grows)."""
        if self.budget <= 0:
            return True
        budget = self._get(BUDGET_KEY) or PageBudget()
        now = parse_ts(inc.detected_at)
        times = [t for t in budget.opened.get(inc.detector, []) if t > now - 3600.0]
        if len(times) < self.budget:
            times.append(now)
            budget.opened[inc.detector] = times
            self._put(BUDGET_KEY, budget)
            return True
        budget.opened[inc.detector] = times
        entry = budget.suppressed.setdefault(inc.detector, [0, now, now, False])
        entry[0] += 1
        entry[2] = now
        self.stats["suppressed"] += 1
        self.suppressed_by_detector[inc.detector] = self.suppressed_by_detector.get(inc.detector, 0) + 1
        if not entry[3] or entry[0] in (10, 100, 1000, 10000):
            entry[3] = True
            emit(self._summary(inc, entry, "trigger"))
        self._put(BUDGET_KEY, budget)
        return False

    def _summary(self, inc: Incident, entry: list, action: str) -> Incident:
        key = f"{inc.detector}/suppressed"
        what = (f"{entry[0]} more {inc.detector} incidents suppressed: more than {self.budget} new "
                f"problems in an hour (page budget); see semwatch_incidents_suppressed_total")
        return inc.model_copy(update={
            "incident_id": hashlib.sha256(f"{key}|{entry[1]:.3f}|{action}".encode()).hexdigest()[:24],
            "dedup_key": key, "event_action": action, "segment": {},
            "summary": what if action == "trigger" else f"resolved: {what}",
            "window_start": format_ts(entry[1]), "window_end": format_ts(entry[2]),
            "group_key": f"problem/{key}", "related": [], "suspected_changes": [], "containment": None,
            "evidence": {"suppressed": entry[0], "budget_per_hour": self.budget}})

    def _close_summaries(self, now: float, emit: Callable[[Incident], None], template: Incident) -> None:
        budget = self._get(BUDGET_KEY)
        if budget is None:
            return
        for detector, entry in list(budget.suppressed.items()):
            if entry[3] and now - entry[2] >= 3600.0:
                emit(self._summary(template.model_copy(update={"detector": detector,
                                                               "detected_at": format_ts(now)}),
                                   entry, "resolve"))
                del budget.suppressed[detector]
                self._put(BUDGET_KEY, budget)

    # -- incidents from detectors ----------------------------------------------------------------
    def admit(self, inc: Incident, emit: Callable[[Incident], None]) -> None:
        """Take one incident from a detector; emit what the outside world should see now."""
        app = inc.segment.get("app", "")
        book = self._book(app)
        self._books.add(BOOK_PREFIX + key_part(app))
        self._put(BOOK_PREFIX + key_part(app), book)
        if inc.event_action == "resolve":
            if book.suppressed.pop(inc.dedup_key, None) is not None:
                return  # its trigger never went out
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
        first = book.open_ids.get(inc.dedup_key)
        if first and first[0] != inc.incident_id:  # an update of an open incident keeps its id
            inc = inc.model_copy(update={"incident_id": first[0]})
        problem = self._problem_for(book, inc, emit)
        if problem is None:  # over the page budget: counted and summarised, not paged
            book.suppressed[inc.dedup_key] = 1
            return
        members = problem[3]
        for m in members:
            if m[0] == inc.dedup_key:
                m[2] = True
                break
        else:
            if len(members) < MAX_MEMBERS:
                members.append([inc.dedup_key, dict(inc.segment), True])
        problem[2] = math.inf
        book.open_ids[inc.dedup_key] = [inc.incident_id, inc.kind, inc.severity, inc.detector]
        emit(inc.model_copy(update={"group_key": problem[0],
                                    "related": sorted(m[0] for m in members if m[0] != inc.dedup_key)}))

    def _problem_for(self, book: ProblemBook, inc: Incident, emit: Callable[[Incident], None]) -> Optional[list]:
        now = parse_ts(inc.detected_at)
        for problem in book.problems:
            if problem[2] != math.inf and now - problem[2] > self.window:
                continue
            if any(m[0] == inc.dedup_key or (self.window > 0 and related(m[1], inc.segment))
                   for m in problem[3]):
                self.stats["grouped"] += 1
                return problem
        if not self._within_budget(inc, emit):
            return None
        key = "problem/" + hashlib.sha256(f"{inc.dedup_key}|{now:.3f}".encode()).hexdigest()[:16]
        problem = [key, now, math.inf, []]
        book.problems.append(problem)
        self.stats["problems"] += 1
        if len(book.problems) > MAX_PROBLEMS:  # the oldest closed ones go first
            closed = [p for p in book.problems if p[2] != math.inf]
            book.problems.remove(min(closed, key=lambda p: p[2]) if closed else book.problems[0])
        return problem

    def _emit_resolve(self, book: ProblemBook, inc: Incident, emit: Callable[[Incident], None]) -> None:
        self._close_summaries(parse_ts(inc.detected_at), emit, inc)
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
    def release(self, now_of: Callable[[str], float], emit: Callable[[Incident], None]) -> None:
        """Emit the held resolves that are due at their app's event time (``now_of(app)``); forget
        problems that closed more than a correlation window ago."""
        for app in sorted(self.waiting):
            now = now_of(app)
            book = self._get(BOOK_PREFIX + key_part(app))
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
                self._put(BOOK_PREFIX + key_part(app), book)

    def reset_index(self, items: Any) -> None:
        """After recovery: the apps whose books hold resolves (``items``: (key, state) pairs)."""
        items = list(items)
        self._books = {key for key, st in items if key.startswith(BOOK_PREFIX) and isinstance(st, ProblemBook)}
        self.waiting = {unescape_part(key[len(BOOK_PREFIX):]) for key, st in items
                        if key.startswith(BOOK_PREFIX) and isinstance(st, ProblemBook) and st.held}
