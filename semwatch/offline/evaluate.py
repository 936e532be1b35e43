"""``semwatch evaluate``: incident triggers against labelled windows.

    semwatch evaluate --incidents incidents.jsonl --labels labels.jsonl [--json report.json]
                      [--slack-s 120] [--grace-s 900] [--days N | --start T --end T] [--config DIR]

Matching
--------
Only ``trigger`` records count (a resolve closes what a trigger opened). A trigger *matches* a
labelled window when

1. the kinds are equal;
2. the segments are consistent: every key present in both has the same value (keys present in only
   one are ignored, so an app-wide ``token-burn`` trigger ``{app}`` is consistent with a loop
   labelled ``{app, route, model}``; a ``model`` that differs is not);
3. ``detected_at`` lies in ``[start - slack_before, end + slack_after]``: ``slack_before``
   (``--slack-s``, default 120 s) tolerates requests that were in flight at a switch and stamped
   before it; ``slack_after`` (``--grace-s``, default 15 min) lets a detector confirm a loop or a
   spike a little after the labelled end (a rollback ends the label; the window still has to fill).

A trigger that matches no window is a false alarm, with two exceptions that count as *related*
(neither a hit nor a false alarm; a true alert for precision):

- the trigger meets rules 2 and 3 for a labelled window of *another* kind: a real problem, seen by
  a detector of another kind (a thumbs-down rule firing during a false-refusal spike, a cost rule
  during a runaway loop). ``--strict-kinds`` counts these as false alarms instead;
- the trigger matches a window labelled ``"optional": true``: a real but minor condition (a short
  provider error burst) that a detector may or may not report. Optional windows are not counted as
  windows: missing one costs nothing.

Pages. An on-call engineer is woken once per *problem*: triggers sharing a ``group_key`` are one
page (a record without one is its own page, once per opening of its ``dedup_key``). A page matches a
labelled window when any of its triggers meets rules 2 and 3, whatever its kind. The report gives
the pages, the pages per labelled incident (over the windows paged), the false pages (matching no
window, not even an optional one) and the time from a window's start to its first page.

A trigger may match several windows (an app-wide trigger while two routes misbehave): each of them
counts as detected. Later triggers matching an already detected window are neither hits nor false
alarms (duplicates; they still count as matched for precision).

Rows: one per detector (against the windows of its kind), one per kind (any detector of that kind)
and ``all``. Per row: windows, detected, missed, triggers, false alarms (total and per day of event
time), related triggers, precision = (matched + related triggers) / triggers, recall = detected windows / windows, time to detect
(median and p90 over detected windows, from the label's start to the first matching trigger; it can
be slightly negative within the slack) and a NAB score.

NAB score (after the Numenta Anomaly Benchmark, Lavin & Ahmad 2015, standard profile)
------------------------------------------------------------------------------------
Each window is scored on its matching interval ``[lo, hi] = [start - slack_before, end +
slack_after]``. The first matching trigger at time ``t`` has relative position
``y = (t - hi) / (hi - lo)`` in ``[-1, 0]`` and scores ``A_tp * s(y)`` with the scaled sigmoid
``s(y) = 2 / (1 + exp(5 y)) - 1``: 0.987 at the very start of the interval, about 0.9 half-way and
0 at its end. A missed window scores ``-A_fn``; every false alarm ``-A_fp``; duplicates 0. Weights:
``A_tp = A_fn = 1`` and ``A_fp = 0.11`` (NAB's standard profile: about nine false alarms cost as
much as one missed window; ``--a-fp`` raises it for paging, where a false page is dearer). The raw
sum is normalised as NAB does, against the null detector (never fires: ``-A_fn`` per window) and the
perfect one (fires at the start of every interval, no false alarm)::

    score = 100 * (raw - null) / (perfect - null)

so 100 is perfect, 0 is as good as silence and a noisy detector goes negative. Unlike NAB, false
alarms cost a flat ``A_fp`` wherever they fall (the grace after each window already forgives the
late confirmations NAB's position-dependent penalty is meant for).

>>> inc = [{"event_action": "trigger", "kind": "token_spike", "detector": "loop",
...         "segment": {"app": "a"}, "detected_at": "2026-01-05T10:05:00Z"}]
>>> lab = [{"kind": "token_spike", "start": "2026-01-05T10:00:00Z",
...         "end": "2026-01-05T10:30:00Z", "segment": {"app": "a", "route": "r"}}]
>>> r = evaluate(inc, lab, days=1.0).row("loop")
>>> (r.detected, r.false_alarms, r.recall, r.ttd_median_s, round(r.nab_score, 1))
(1, 0, 1.0, 300.0, 99.3)
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from pydantic import ValidationError

from semwatch.contract import LabelledWindow, format_ts, is_optional, parse_ts

DEFAULT_SLACK_BEFORE_S = 120.0
DEFAULT_SLACK_AFTER_S = 900.0
# NAB standard profile weights.
A_TP = 1.0
A_FN = 1.0
A_FP = 0.11
NAB_STEEPNESS = 5.0
ALL = "all"


# -- small pieces --------------------------------------------------------------------------------
def segments_consistent(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when every key present in both segments has the same value.

    >>> segments_consistent({"app": "a", "route": "r"}, {"app": "a", "model": "m"})
    True
    >>> segments_consistent({"app": "a", "route": "r"}, {"app": "a", "route": "s"})
    False
    """
    if len(a) > len(b):
        a, b = b, a
    return all(str(b[k]) == str(v) for k, v in a.items() if k in b)


def scaled_sigmoid(y: float) -> float:
    """NAB's scaled sigmoid: 2 / (1 + exp(5 y)) - 1 (``y`` in [-1, 0] inside a window).

    >>> [round(scaled_sigmoid(y), 3) for y in (-1.0, -0.5, 0.0)]
    [0.987, 0.848, 0.0]
    """
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(NAB_STEEPNESS * y)) - 1.0


def percentile(values: list[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (``q`` in 0..100) of a non-empty list; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Window:
    """A labelled window, normalised (epoch seconds)."""

    index: int
    kind: str
    start: float
    end: float
    segment: dict
    note: str = ""
    run_id: Optional[str] = None
    optional: bool = False


@dataclass(frozen=True)
class Trigger:
    index: int
    detector: str
    kind: str
    segment: dict
    at: float
    summary: str = ""
    page: str = ""  # the page it belongs to: its group_key, else its dedup_key's opening
    dedup_key: str = ""


#: A false-alarm mark as evaluate takes it: (dedup_key, detected_at or None for every trigger of the key).
Mark = tuple[str, Optional[float]]
#: A replayed trigger matches a mark's detected_at within this long (another setting of the same
#: detector may confirm the same problem a little earlier or later).
MARK_TOLERANCE_S = 600.0


def is_marked(t: Trigger, marks: Iterable[Mark], tolerance_s: float = MARK_TOLERANCE_S) -> bool:
    """Whether an on-call marked this trigger as a false alarm (same dedup_key, close in time).

    >>> t = Trigger(0, "d", "k", {}, 1000.0, dedup_key="d/1")
    >>> is_marked(t, [("d/1", 1300.0)]), is_marked(t, [("d/1", None)]), is_marked(t, [("d/2", None)])
    (True, True, False)
    """
    return any(key == t.dedup_key and (at is None or abs(at - t.at) <= tolerance_s) for key, at in marks)


@dataclass
class Row:
    detector: str  # detector name, or "all" on the per-kind and overall rows
    kind: str  # incident kind, or "all"
    scope: str  # detector | kind | all
    windows: int = 0
    detected: int = 0
    missed: int = 0
    triggers: int = 0
    matched_triggers: int = 0
    related: int = 0  # triggers on another kind's window or an optional window (not false alarms)
    false_alarms: int = 0
    false_alarms_per_day: Optional[float] = None
    precision: Optional[float] = None
    recall: Optional[float] = None
    ttd_median_s: Optional[float] = None
    ttd_p90_s: Optional[float] = None
    nab_raw: Optional[float] = None
    nab_score: Optional[float] = None  # normalised 0..100 (None without windows)


@dataclass
class EvaluationReport:
    rows: list[Row]
    days: Optional[float]
    days_from: str
    slack_before_s: float
    slack_after_s: float
    a_fp: float
    windows: list[dict] = field(default_factory=list)
    false_alarms: list[dict] = field(default_factory=list)
    related: list[dict] = field(default_factory=list)
    strict_kinds: bool = False
    pages: dict = field(default_factory=dict)

    def row(self, detector: str, kind: Optional[str] = None) -> Row:
        """The row of one detector (``kind`` to pick one of several), of one kind
        (``row("all", kind)``) or the overall row (``row("all")``)."""
        for r in self.rows:
            if detector == ALL and kind is None:
                if r.scope == "all":
                    return r
            elif detector == ALL:
                if r.scope == "kind" and r.kind == kind:
                    return r
            elif r.scope == "detector" and r.detector == detector and (kind is None or r.kind == kind):
                return r
        raise KeyError(f"no evaluation row for detector={detector!r} kind={kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "days_from": self.days_from,
            "matching": {"slack_before_s": self.slack_before_s, "slack_after_s": self.slack_after_s,
                         "strict_kinds": self.strict_kinds},
            "nab": {"a_tp": A_TP, "a_fn": A_FN, "a_fp": self.a_fp, "steepness": NAB_STEEPNESS},
            "rows": [asdict(r) for r in self.rows],
            "windows": self.windows,
            "false_alarms": self.false_alarms,
            "related": self.related,
            "pages": self.pages,
        }

    def table(self) -> str:
        return format_table(self)


# -- inputs --------------------------------------------------------------------------------------
def _windows(labels: Iterable[Any]) -> list[Window]:
    out = []
    for i, lab in enumerate(labels):
        if isinstance(lab, LabelledWindow):
            lw = lab
        else:
            lw = LabelledWindow.model_validate(lab)
        extra = lw.model_extra or {}
        start, end = min(lw.start, lw.end), max(lw.start, lw.end)
        out.append(Window(i, lw.kind, start, end, dict(lw.segment), str(extra.get("note", "")),
                          extra.get("run_id"), is_optional(extra)))
    return out


def _triggers(incidents: Iterable[Any]) -> list[Trigger]:
    out = []
    opened: dict[str, str] = {}  # dedup_key -> its page while open (records without a group_key)
    for i, inc in enumerate(incidents):
        d = inc.to_dict() if hasattr(inc, "to_dict") else inc
        key = str(d.get("dedup_key") or f"#{i}")
        if d.get("event_action") != "trigger":
            opened.pop(key, None)
            continue
        page = d.get("group_key") or opened.setdefault(key, f"{key}@{i}")
        out.append(Trigger(i, str(d["detector"]), str(d["kind"]), dict(d.get("segment") or {}),
                           parse_ts(d["detected_at"]), str(d.get("summary", "")), str(page),
                           str(d.get("dedup_key") or "")))
    out.sort(key=lambda t: (t.at, t.index))
    return out


def page_summary(triggers: list[Trigger], windows: list[Window], days: Optional[float],
                 slack_before_s: float, slack_after_s: float) -> dict[str, Any]:
    """Pages (problems paged) and how they line up with the labelled incidents."""
    first_at: dict[str, float] = {}
    for t in triggers:
        first_at.setdefault(t.page, t.at)
    paged_windows: dict[int, set[str]] = {}
    matched_pages: set[str] = set()
    for t in triggers:
        for w in windows:
            if w.start - slack_before_s <= t.at <= w.end + slack_after_s \
                    and segments_consistent(w.segment, t.segment):
                matched_pages.add(t.page)
                if not w.optional:
                    paged_windows.setdefault(w.index, set()).add(t.page)
    required = [w for w in windows if not w.optional]
    per_window = [len(paged_windows[w.index]) for w in required if w.index in paged_windows]
    ttfp = [min(first_at[p] for p in paged_windows[w.index]) - w.start
            for w in required if w.index in paged_windows]
    false_pages = len(set(first_at) - matched_pages)
    return {
        "pages": len(first_at),
        "incidents": len(required),
        "incidents_paged": len(per_window),
        "pages_per_incident": (sum(per_window) / len(per_window)) if per_window else None,
        "max_pages_per_incident": max(per_window, default=0),
        "false_pages": false_pages,
        "false_pages_per_day": (false_pages / days) if days else None,
        "time_to_first_page_median_s": percentile(ttfp, 50),
        "time_to_first_page_max_s": max(ttfp) if ttfp else None,
    }


def _all_times(incidents: Iterable[Any]) -> list[float]:
    times = []
    for inc in incidents:
        d = inc.to_dict() if hasattr(inc, "to_dict") else inc
        for k in ("detected_at", "window_start"):
            if d.get(k) is not None:
                times.append(parse_ts(d[k]))
    return times


# -- the evaluation ------------------------------------------------------------------------------
def evaluate(incidents: list[Any], labels: list[Any], *,
             detectors: Optional[Mapping[str, str]] = None,
             slack_before_s: float = DEFAULT_SLACK_BEFORE_S,
             slack_after_s: float = DEFAULT_SLACK_AFTER_S,
             days: Optional[float] = None, start: Optional[float] = None, end: Optional[float] = None,
             a_fp: float = A_FP, days_from: Optional[str] = None,
             strict_kinds: bool = False, marks: Optional[list[Mark]] = None) -> EvaluationReport:
    """Match incident triggers (dicts or :class:`Incident`) to labelled windows (dicts).

    ``detectors`` (name -> kind) adds rows for detectors that raised nothing. The day count for
    false alarms per day is ``days``, else ``end - start``, else the span of labels and incidents
    (``days_from`` describes it in the table footer). ``marks`` are on-call false-alarm marks
    (:func:`is_marked`): a marked trigger is a false alarm whatever window it would match.
    """
    windows = _windows(labels)
    triggers = _triggers(incidents)
    if days is not None:
        days_from = days_from or "given"
    elif start is not None and end is not None:
        days, days_from = max(end - start, 0.0) / 86400.0, days_from or "start/end"
    else:
        times = [w.start for w in windows] + [w.end for w in windows] + _all_times(incidents)
        span = (max(times) - min(times)) if times else 0.0
        days, days_from = span / 86400.0, days_from or "span of labels and incidents"
    if days is not None and days <= 0:
        days = None

    # Which windows each trigger matches; which triggers are related (see the module docstring).
    matches: dict[int, list[Window]] = {}
    related: dict[int, list[Window]] = {}
    for t in triggers:
        near = [w for w in windows if w.start - slack_before_s <= t.at <= w.end + slack_after_s
                and segments_consistent(w.segment, t.segment)]
        matches[t.index] = [w for w in near if w.kind == t.kind and not w.optional]
        related[t.index] = [w for w in near if w.kind == t.kind and w.optional] + (
            [] if strict_kinds else [w for w in near if w.kind != t.kind and not w.optional])
        if marks and is_marked(t, marks):  # the on-call's verdict on this very page wins
            matches[t.index], related[t.index] = [], []
    required = [w for w in windows if not w.optional]

    # Rows: detectors (given order first, then as seen), kinds, all.
    det_keys: list[tuple[str, str]] = []
    for name, kind in (detectors or {}).items():
        if (name, kind) not in det_keys:
            det_keys.append((name, kind))
    for t in triggers:
        if (t.detector, t.kind) not in det_keys:
            det_keys.append((t.detector, t.kind))
    kinds: list[str] = []
    for k in [k for _, k in det_keys] + [w.kind for w in required]:
        if k not in kinds:
            kinds.append(k)

    rows: list[Row] = []
    for name, kind in det_keys:
        ts = [t for t in triggers if t.detector == name and t.kind == kind]
        rows.append(_row(name, kind, "detector", ts, [w for w in required if w.kind == kind],
                         matches, related, days, slack_before_s, slack_after_s, a_fp))
    for kind in kinds:
        ts = [t for t in triggers if t.kind == kind]
        rows.append(_row(ALL, kind, "kind", ts, [w for w in required if w.kind == kind],
                         matches, related, days, slack_before_s, slack_after_s, a_fp))
    rows.append(_row(ALL, ALL, "all", triggers, required, matches, related, days, slack_before_s,
                     slack_after_s, a_fp))

    window_details = []
    for w in windows:
        first: dict[str, dict] = {}
        for t in triggers:
            if w in matches[t.index] and t.detector not in first:
                first[t.detector] = {"detected_at": format_ts(t.at), "ttd_s": round(t.at - w.start, 3),
                                     "summary": t.summary}
        window_details.append({"kind": w.kind, "start": format_ts(w.start), "end": format_ts(w.end),
                               "segment": w.segment, "note": w.note, "optional": w.optional,
                               "detected_by": first})

    def brief(t: Trigger) -> dict:
        return {"detector": t.detector, "kind": t.kind, "detected_at": format_ts(t.at),
                "segment": t.segment, "summary": t.summary}

    false_alarms = [brief(t) for t in triggers if not matches[t.index] and not related[t.index]]
    related_list = [{**brief(t), "windows": [{"kind": w.kind, "start": format_ts(w.start),
                                               "segment": w.segment, "optional": w.optional}
                                              for w in related[t.index]]}
                    for t in triggers if not matches[t.index] and related[t.index]]
    pages = page_summary(triggers, windows, days, slack_before_s, slack_after_s)
    return EvaluationReport(rows, days, days_from, slack_before_s, slack_after_s, a_fp,
                            window_details, false_alarms, related_list, strict_kinds, pages)


def _row(detector: str, kind: str, scope: str, triggers: list[Trigger], windows: list[Window],
         matches: dict[int, list[Window]], related: dict[int, list[Window]], days: Optional[float],
         slack_before_s: float, slack_after_s: float, a_fp: float) -> Row:
    row = Row(detector=detector, kind=kind, scope=scope, windows=len(windows), triggers=len(triggers))
    wanted = {w.index for w in windows}
    first_at: dict[int, float] = {}
    for t in triggers:  # sorted by time: the first match of a window is its detection
        hit = [w for w in matches[t.index] if w.index in wanted]
        if hit:
            row.matched_triggers += 1
            for w in hit:
                first_at.setdefault(w.index, t.at)
        elif matches[t.index] or related[t.index]:
            # A hit for another row's windows (another detector's kind) or a related trigger.
            row.related += 1
        else:
            row.false_alarms += 1
    row.detected = len(first_at)
    row.missed = row.windows - row.detected
    if days:
        row.false_alarms_per_day = row.false_alarms / days
    if row.triggers:
        row.precision = (row.matched_triggers + row.related) / row.triggers
    if row.windows:
        row.recall = row.detected / row.windows
    by_index = {w.index: w for w in windows}
    ttd = [at - by_index[i].start for i, at in first_at.items()]
    row.ttd_median_s = percentile(ttd, 50)
    row.ttd_p90_s = percentile(ttd, 90)
    # NAB.
    raw = -a_fp * row.false_alarms
    for w in windows:
        at = first_at.get(w.index)
        if at is None:
            raw -= A_FN
            continue
        lo, hi = w.start - slack_before_s, w.end + slack_after_s
        y = (at - hi) / (hi - lo) if hi > lo else 0.0
        raw += A_TP * scaled_sigmoid(y)
    row.nab_raw = raw
    if windows:
        null = -A_FN * len(windows)
        perfect = A_TP * scaled_sigmoid(-1.0) * len(windows)
        row.nab_score = 100.0 * (raw - null) / (perfect - null)
    return row


# -- output --------------------------------------------------------------------------------------
def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    a = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if a < 120:
        return f"{sign}{a:.0f}s"
    if a < 7200:
        return f"{sign}{a / 60:.1f}m"
    return f"{sign}{a / 3600:.1f}h"


def _f(x: Optional[float], spec: str) -> str:
    return "-" if x is None else format(x, spec)


COLUMNS = ("detector", "kind", "windows", "detected", "missed", "triggers", "related", "FA", "FA/day",
           "precision", "recall", "TTD p50", "TTD p90", "NAB")


def table_cells(r: Row) -> list[str]:
    return [r.detector, r.kind, str(r.windows), str(r.detected), str(r.missed), str(r.triggers),
            str(r.related), str(r.false_alarms), _f(r.false_alarms_per_day, ".2f"), _f(r.precision, ".2f"),
            _f(r.recall, ".2f"), fmt_duration(r.ttd_median_s), fmt_duration(r.ttd_p90_s),
            _f(r.nab_score, ".1f")]


def format_table(report: EvaluationReport, markdown: bool = False) -> str:
    """The report as an aligned text table (or a Markdown table)."""
    body = [table_cells(r) for r in report.rows]
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |",
                 "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(COLUMNS[i]), *(len(c[i]) for c in body)) for i in range(len(COLUMNS))]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(cells))

    out = [line(COLUMNS), "  ".join("-" * w for w in widths)]
    scope = None
    for r, cells in zip(report.rows, body):
        if scope is not None and r.scope != scope:
            out.append("")
        scope = r.scope
        out.append(line(cells))
    days = "-" if report.days is None else f"{report.days:.2f}"
    out.append("")
    related = ("another kind's window counts as a false alarm (--strict-kinds)" if report.strict_kinds
               else "related: on another kind's window or an optional one (not a false alarm)")
    pg = report.pages
    if pg:
        per = "-" if pg["pages_per_incident"] is None else f"{pg['pages_per_incident']:.2f}"
        out.append(f"pages: {pg['pages']} problems paged; {per} per labelled incident (max "
                   f"{pg['max_pages_per_incident']}) over {pg['incidents_paged']} of {pg['incidents']} "
                   f"incidents; {pg['false_pages']} false; first page after "
                   f"{fmt_duration(pg['time_to_first_page_median_s'])} (median), "
                   f"{fmt_duration(pg['time_to_first_page_max_s'])} (max)")
    out.append(f"days: {days} ({report.days_from}); match: kind, consistent segment, detected_at in "
               f"[start - {report.slack_before_s:g} s, end + {report.slack_after_s:g} s]; "
               f"{related}; NAB A_fp={report.a_fp:g}")
    return "\n".join(out)


# -- files and CLI -------------------------------------------------------------------------------
class InputError(ValueError):
    pass


def read_jsonl(path: str | Path) -> list[dict]:
    """JSON Lines -> dicts; a bad line fails with file:line and the reason."""
    out = []
    opener = sys.stdin if str(path) == "-" else open(path, encoding="utf-8")
    with opener as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object")
            out.append(obj)
    return out


def load_labels(path: str | Path) -> list[dict]:
    labels = read_jsonl(path)
    for i, lab in enumerate(labels, 1):
        try:
            LabelledWindow.model_validate(lab)
        except ValidationError as exc:
            from semwatch.contract import describe_validation_error

            raise InputError(f"{path}: label {i}: {describe_validation_error(exc)} "
                             "(expected {\"kind\", \"start\", \"end\", \"segment\"})") from None
    return labels


def load_feedback(path: str | Path) -> list[dict]:
    """False-alarm marks (``semwatch mark-false-alarm --file``, or the feedback topic dumped as
    JSON Lines), validated; a bad line fails with file:line."""
    from semwatch.contract import describe_validation_error
    from semwatch.contract.feedback import FalseAlarmMark

    marks = read_jsonl(path)
    for i, mark in enumerate(marks, 1):
        try:
            FalseAlarmMark.model_validate(mark)
        except ValidationError as exc:
            raise InputError(f"{path}: mark {i}: {describe_validation_error(exc)}") from None
    return [FalseAlarmMark.model_validate(m).model_dump() for m in marks]


def load_incidents(path: str | Path) -> list[dict]:
    incidents = read_jsonl(path)
    for i, inc in enumerate(incidents, 1):
        missing = [k for k in ("event_action", "kind", "detector", "detected_at") if k not in inc]
        if missing:
            raise InputError(f"{path}: incident {i}: missing {', '.join(missing)}")
        try:
            parse_ts(inc["detected_at"])
        except ValueError as exc:
            raise InputError(f"{path}: incident {i}: detected_at: {exc}") from None
    return incidents


def detector_kinds(config) -> dict[str, str]:
    """name -> incident kind of every enabled detector and rule of a loaded config."""
    from semwatch.engine.detector import REGISTRY

    out = {}
    for p in config.detector_params:
        if p.enabled:
            out[p.name] = REGISTRY[p.type](p, config.env).kind
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--incidents", required=True, help="incidents JSON Lines (from replay or the topic)")
    parser.add_argument("--labels", required=True, help="labelled windows JSON Lines")
    parser.add_argument("--json", default=None, metavar="OUT.json", help="also write the report as JSON")
    parser.add_argument("--slack-s", type=float, default=DEFAULT_SLACK_BEFORE_S,
                        help="a trigger this long before a window's start still matches (default 120)")
    parser.add_argument("--grace-s", type=float, default=DEFAULT_SLACK_AFTER_S,
                        help="a trigger this long after a window's end still matches (default 900)")
    parser.add_argument("--days", type=float, default=None,
                        help="days of event time covered (default: --start/--end, else the span of "
                             "labels and incidents, which underestimates quiet edges)")
    parser.add_argument("--start", default=None, help="start of the recording (RFC 3339 or epoch s)")
    parser.add_argument("--end", default=None, help="end of the recording (RFC 3339 or epoch s)")
    parser.add_argument("--a-fp", type=float, default=A_FP,
                        help="NAB cost of one false alarm (default 0.11, NAB's standard profile)")
    parser.add_argument("--config", default=None,
                        help="config directory: adds rows for detectors that raised nothing")
    parser.add_argument("--strict-kinds", action="store_true",
                        help="a trigger on a labelled window of another kind is a false alarm "
                             "(default: related, neither hit nor false alarm)")


def run(args) -> int:
    try:
        incidents = load_incidents(args.incidents)
        labels = load_labels(args.labels)
        start = parse_ts(args.start) if args.start else None
        end = parse_ts(args.end) if args.end else None
    except (InputError, OSError, ValueError) as exc:
        print(f"semwatch evaluate: {exc}", file=sys.stderr)
        return 2
    if (start is None) != (end is None):
        print("semwatch evaluate: --start and --end go together", file=sys.stderr)
        return 2
    detectors = None
    if args.config:
        from semwatch.config import load_config

        detectors = detector_kinds(load_config(args.config))
    report = evaluate(incidents, labels, detectors=detectors, slack_before_s=args.slack_s,
                      slack_after_s=args.grace_s, days=args.days, start=start, end=end, a_fp=args.a_fp,
                      strict_kinds=args.strict_kinds)
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0
