"""``semwatch tune``: sweep each detector's sensitivity knobs under a false-alarm budget.

    semwatch tune --events E.jsonl --labels L.jsonl --max-false-alarms-per-day 1 \\
                  --out-config tuned/ --report tune/report.md [--jobs 2] [--config config]
    semwatch tune --events E.jsonl [--max-false-alarms-per-day 3 --pick-by-volume --out-config tuned/]

How it works
------------
1. The recording is parsed once (:class:`RunEvent`) and enriched once by the config's enrichment
   steps (refusal verdicts from the classifier, prices for events without ``cost_usd``), exactly as
   every later run would enrich it. Enrichment only fills fields that are None, so later runs find
   nothing to change and all runs share the same event objects: no copy, no re-parse. (Measured on one simulated day, 260k events: parsing 18 s, a shallow
   ``model_copy`` per run 6 s, re-classifying refusals ~6 s per run, sharing the pre-enriched list 0 s.)
2. For every enabled detector and rule (``--detectors`` to pick some), the candidates are its
   configured setting plus the grid of :mod:`semwatch.engine.tuning`. Each candidate is replayed
   through the real engine with that detector alone (``SemwatchConfig.with_params`` +
   :func:`semwatch.offline.replay.replay_events`) and its triggers are matched to the labels by
   :func:`semwatch.offline.evaluate.evaluate`. With ``--jobs 2`` the runs go to a fork-started process pool:
   the events are parsed in the parent before forking, so workers inherit them.
3. Choice, per detector (the budget counts that detector's false alarms per day of event time):
   among candidates within the budget, the highest recall, then the highest NAB score (earliness,
   with a small cost per false alarm), then the fewest false alarms, then the configured setting.
   If none is within the budget, the one with the fewest false alarms is chosen and the report and
   the terminal say so loudly. A detector whose kind has no labelled window keeps its configured
   setting when that is within the budget (recall cannot be measured; more sensitivity would only
   buy alarms), else the least noisy candidate.
4. Outputs: the tuned config directory (a copy of the source directory whose ``semwatch.yaml``
   has the chosen values edited in place, comments kept, verified with :func:`load_config`), a
   Markdown report with PNG plots next to it: recall against false alarms per day per detector, and
   for each labelled window a timeline of each detector's signal around it, recorded from the
   detector's state during one more replay with the chosen setting.

On-call feedback (``--feedback marks.jsonl``, written by ``semwatch mark-false-alarm``): a trigger
with a marked dedup key, within 10 minutes of the mark's ``detected_at`` (or of the replayed
trigger with the mark's ``incident_id``; a mark with neither marks every trigger of that key) is a
false alarm of its detector in the choice, whatever window it would match; without labels,
``--pick-by-volume`` prefers the settings that raise the fewest marked triggers.

Without labels, the report lists the alert volume per day of every candidate, so that a budget
can be chosen; no config is written unless ``--pick-by-volume`` asks for the most sensitive setting
(the most alerts per day) within ``--max-false-alarms-per-day``.

Detectors are independent in the engine (state is keyed by detector name; only the shared change
history, which feeds ``suspected_changes``, is common), so the union of the chosen runs' triggers
is what the tuned config raises on the same data; the report evaluates that union as "combined".
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

from semwatch.config import SemwatchConfig, load_config
from semwatch.contract import RunEvent, is_optional, parse_ts
from semwatch.engine.detector import REGISTRY, DetectorParams
from semwatch.engine.tuning import ProbeUnavailable, SignalProbe, describe, space_of, unknown_params
from semwatch.engine.tuning import candidates as space_candidates
from semwatch.enrich import DictStore
from semwatch.offline.evaluate import (
    A_FP,
    DEFAULT_SLACK_AFTER_S,
    DEFAULT_SLACK_BEFORE_S,
    EvaluationReport,
    InputError,
    Mark,
    Trigger,
    evaluate,
    is_marked,
    load_feedback,
    load_labels,
    segments_consistent,
)
from semwatch.offline.replay import read_events, replay_events
from semwatch.offline.tune_data import Candidate, DetectorSweep, TuneResult, nab_of
from semwatch.offline.tune_report import summary_text, write_report
from semwatch.offline.tuned_config import rewrite_semwatch_yaml, write_tuned_config  # noqa: F401 (tests)

# Set in the parent before the pool forks; workers read them (never pickled).
_EVENTS: list[RunEvent] = []
_CONFIG: Optional[SemwatchConfig] = None

TIMELINE_PAD_S = 1800.0

# -- events ----------------------------------------------------------------------------------------
def load_events(path: str | Path) -> tuple[list[RunEvent], list[tuple[int, str]]]:
    """Parse a JSON Lines recording once; rejected lines come back with line number and reason."""
    rejected: list[tuple[int, str]] = []
    opener = sys.stdin.buffer if str(path) == "-" else open(path, "rb")
    # Every parsed event stays alive: the collector would rescan the growing list at each
    # generation-2 pass (measured: 34 us/event parsing with it, 8 without).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with opener as fh:
            events = list(read_events(fh, rejected))
    finally:
        if was_enabled:
            gc.enable()
    events.sort(key=lambda e: e.ts)  # stable: a recording in arrival order keeps its ties
    return events, rejected


def enrich(events: list[RunEvent], config: SemwatchConfig) -> list[RunEvent]:
    """The events with refusal verdicts and prices filled, as every replay would fill them.

    Enrichment only fills absent fields, so replaying the enriched events enriches nothing again:
    every candidate's replay shares this one list.
    """
    step, store = config.build_enrichment(), DictStore()
    return [step(e, store) for e in events]


# -- worker side -------------------------------------------------------------------------------------
def _slim(inc) -> dict:
    d = inc.to_dict()
    return {k: d.get(k) for k in ("event_action", "kind", "detector", "severity", "segment",
                                  "detected_at", "window_start", "window_end", "summary",
                                  "observed", "baseline", "threshold", "score", "dedup_key",
                                  "incident_id")}


def _run_sweep(params: DetectorParams) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    result = replay_events(_EVENTS, _CONFIG.with_params([params]))
    return [_slim(i) for i in result.incidents], time.perf_counter() - t0


def _task(task: tuple) -> tuple:
    what, key, payload = task
    if what == "sweep":
        incidents, seconds = _run_sweep(payload)
        return what, key, incidents, seconds
    t0 = time.perf_counter()
    out = _run_timeline(*payload)
    return what, key, out, time.perf_counter() - t0


class _Capturing:
    """A config whose engine stays reachable, so probes can read detector state during a replay."""

    def __init__(self, config: SemwatchConfig):
        self._config = config
        self.built = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)

    def build_engine(self, data=None):
        self.built = self._config.build_engine(data)
        return self.built


class _Probe:
    """Records one detector's signal around one labelled window from its segment state.

    What the signal is, and how it is read from the state the detector keeps anyway, is the
    detector's own business (``Detector.probe`` returning a
    :class:`semwatch.engine.tuning.SignalProbe`). Detectors without one (point detectors such as
    ``wrong_entity_action``) get events per minute in the labelled segment only.
    """

    def __init__(self, detector: Any, window: dict, lo: float, hi: float):
        params = detector.params
        self.w = window
        self.lo, self.hi = lo, hi
        # (time, signal, baseline, threshold, second signal)
        self.points: list[tuple[float, Optional[float], Optional[float], Optional[float],
                                Optional[float]]] = []
        self.rate: Counter = Counter()
        self.unavailable = ""
        seg = window["segment"]
        missing = [f for f in params.group_by if f not in seg]
        self.seg = {f: seg.get(f, "") for f in params.group_by}
        self.probe: Optional[SignalProbe] = None
        try:
            self.probe = detector.probe(self.seg, window)
            if self.probe is None:
                self.unavailable = f"no probe for detector type {params.type!r}"
        except ProbeUnavailable as exc:
            self.unavailable = str(exc)
        if self.probe is not None and missing:
            self.probe, self.unavailable = None, f"the label's segment lacks {missing} (group_by)"
        self.signal = self.probe.signal if self.probe else None
        self.signal2 = self.probe.signal2 if self.probe else None
        self.threshold_label = self.probe.threshold_label if self.probe else "threshold"

    def sample(self, engine, event: RunEvent) -> None:
        if segments_consistent(self.w["segment"], {k: event.segment_value(k) for k in self.w["segment"]
                                                  if event.segment_value(k) is not None}):
            self.rate[int(event.ts // 60)] += 1
        if self.probe is None:
            return
        try:
            point = self.probe.read(engine, event)
        except (AttributeError, TypeError, IndexError, KeyError) as exc:  # a detector changed shape
            self.probe = self.signal = None
            self.unavailable = f"probe failed ({type(exc).__name__}: {exc})"
            self.points.clear()
            return
        if point is not None:
            self.points.append(point)

    def result(self) -> dict:
        return {"window": self.w, "lo": self.lo, "hi": self.hi, "signal": self.signal,
                "signal2": self.signal2, "threshold_label": self.threshold_label,
                "unavailable": self.unavailable, "points": self.points,
                "rate": sorted(self.rate.items())}


def _run_timeline(params: DetectorParams, windows: list[dict]) -> dict:
    cfg = _Capturing(_CONFIG.with_params([params]))
    detector = REGISTRY[params.type](params, _CONFIG.env)
    probes = [_Probe(detector, w, w["lo"], w["hi"]) for w in windows]
    lo = min(p.lo for p in probes)
    hi = max(p.hi for p in probes)

    def stream() -> Iterator[RunEvent]:
        for ev in _EVENTS:
            yield ev  # replay_events processes it before asking for the next one
            if lo <= ev.ts <= hi:
                for pr in probes:
                    if pr.lo <= ev.ts <= pr.hi:
                        pr.sample(cfg.built, ev)

    result = replay_events(stream(), cfg)  # type: ignore[arg-type]
    return {"incidents": [_slim(i) for i in result.incidents], "series": [p.result() for p in probes]}


# -- the sweep ---------------------------------------------------------------------------------------
def _run_tasks(tasks: list[tuple], jobs: int, progress: bool, desc: str) -> Iterator[tuple]:
    from tqdm import tqdm

    # disable=None: bars only on a terminal (no carriage-return noise in logs and CI).
    bar = tqdm(total=len(tasks), desc=desc, unit="run", disable=None if progress else True,
               file=sys.stderr, dynamic_ncols=True)
    # The recording's events (and everything else alive now) leave the collector's view: every
    # replay would otherwise rescan them at each generation-2 pass, and after a fork the children
    # would copy the pages the scan touches.
    gc.collect()
    gc.freeze()
    try:
        if jobs <= 1 or len(tasks) <= 1:
            for t in tasks:
                out = _task(t)
                bar.update(1)
                yield out
            return
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(processes=jobs) as pool:
            for out in pool.imap_unordered(_task, tasks, chunksize=1):
                bar.update(1)
                yield out
    finally:
        gc.unfreeze()
        bar.close()


def detector_kind(params: DetectorParams, config: SemwatchConfig) -> str:
    return REGISTRY[params.type](params, config.env).kind


def tune(events: list[RunEvent], config: SemwatchConfig, labels: Optional[list[dict]] = None, *,
         budget: Optional[float] = None, jobs: int = 2, detectors: Optional[Iterable[str]] = None,
         spaces: Optional[Mapping] = None, pick_by_volume: bool = False,
         slack_before_s: float = DEFAULT_SLACK_BEFORE_S, slack_after_s: float = DEFAULT_SLACK_AFTER_S,
         a_fp: float = A_FP, timelines: bool = True, progress: bool = True,
         rejected: int = 0, enriched: bool = False, feedback: Optional[list[dict]] = None) -> TuneResult:
    """Sweep, evaluate and choose (see the module docstring). ``events`` are parsed events in
    event-time order (:func:`load_events`); they are enriched (as a new list) unless ``enriched``.
    ``feedback``: on-call false-alarm marks (:func:`semwatch.offline.evaluate.load_feedback`)."""
    global _EVENTS, _CONFIG
    if labels is not None and budget is None:
        raise ValueError("a false-alarm budget (max false alarms per day) is needed with labels")
    if pick_by_volume and budget is None:
        raise ValueError("--pick-by-volume needs --max-false-alarms-per-day")
    if jobs > 1 and "fork" not in multiprocessing.get_all_start_methods():
        jobs = 1
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if not enriched:
        events = enrich(events, config)
    seconds["enrich"] = time.perf_counter() - t0
    first = min(e.ts for e in events) if events else None
    last = max(e.ts for e in events) if events else None
    days = (last - first) / 86400.0 if events and last > first else None

    wanted = set(detectors) if detectors is not None else None
    if wanted is not None:
        unknown = wanted - {p.name for p in config.detector_params}
        if unknown:
            raise ValueError(f"no detector or rule named {sorted(unknown)} in {config.directory}")
    sweeps: list[DetectorSweep] = []
    label_kinds = Counter(lab["kind"] for lab in labels or [] if not is_optional(lab))
    for p in config.detector_params:
        if not p.enabled or (wanted is not None and p.name not in wanted):
            continue
        kind = detector_kind(p, config)
        cands = [Candidate(p.name, i, u, cp, describe(u), not u)
                 for i, (u, cp) in enumerate(space_candidates(p, space_of(p, spaces)))]
        sweeps.append(DetectorSweep(p.name, p.type, kind, p, cands, windows=label_kinds.get(kind, 0),
                                    unknown_space=unknown_params(p, space_of(p, spaces))))

    _EVENTS, _CONFIG = events, config
    try:
        # With labels, a detector whose kind has no labelled window keeps its configured setting
        # when that is within the budget (see _choose): its other settings are replayed only if not.
        def lazy(s: DetectorSweep) -> bool:
            return labels is not None and not s.windows and len(s.candidates) > 1

        t1 = time.perf_counter()
        tasks = [("sweep", (si, c.index), c.params) for si, s in enumerate(sweeps)
                 for c in s.candidates if c.configured or not lazy(s)]
        for _, (si, ci), incidents, secs in _run_tasks(tasks, jobs, progress, "sweep"):
            c = sweeps[si].candidates[ci]
            c.incidents, c.seconds = incidents, secs
        more = []
        for si, s in enumerate(sweeps):
            if lazy(s):
                alarms = sum(1 for i in s.candidates[0].incidents if i["event_action"] == "trigger")
                if days and alarms / days > budget + 1e-9:
                    more += [("sweep", (si, c.index), c.params) for c in s.candidates[1:]]
                else:
                    s.skipped = len(s.candidates) - 1
                    s.candidates = s.candidates[:1]
        for _, (si, ci), incidents, secs in _run_tasks(more, jobs, progress, "sweep (more)"):
            c = sweeps[si].candidates[ci]
            c.incidents, c.seconds = incidents, secs
        seconds["sweep"] = time.perf_counter() - t1

        marks = resolve_marks(feedback or [], sweeps)

        def score(incidents: list[dict], kinds: dict[str, str]) -> EvaluationReport:
            return evaluate(incidents, labels, detectors=kinds, days=days,
                            days_from="event span of the recording", slack_before_s=slack_before_s,
                            slack_after_s=slack_after_s, a_fp=a_fp, marks=marks)

        for s in sweeps:
            for c in s.candidates:
                c.triggers = sum(1 for i in c.incidents if i["event_action"] == "trigger")
                c.alerts_per_day = c.triggers / days if days else None
                c.marked = sum(1 for i in c.incidents if i["event_action"] == "trigger"
                               and is_marked(_as_trigger(i), marks))
                if labels is not None:
                    c.row = score(c.incidents, {s.name: s.kind}).row(s.name, s.kind)
            _choose(s, labels is not None, budget, pick_by_volume)

        result = TuneResult(sweeps, len(events), rejected, first, last, days, labels, budget,
                            slack_before_s, slack_after_s, a_fp, jobs, seconds,
                            picked=labels is not None or pick_by_volume, marks=len(marks))
        if labels is not None:
            kinds = {s.name: s.kind for s in sweeps}
            if wanted is not None:  # a subset: leave out windows that none of it can detect
                labels = result.labels = [lab for lab in labels if lab["kind"] in set(kinds.values())]
            result.combined = score([i for s in sweeps if s.chosen for i in s.chosen.incidents], kinds)
            result.configured_combined = score([i for s in sweeps for i in s.candidates[0].incidents],
                                               kinds)
            if timelines and labels:
                t2 = time.perf_counter()
                _timelines(result, jobs, progress)
                seconds["timelines"] = time.perf_counter() - t2
    finally:
        _EVENTS, _CONFIG = [], None
    seconds["total"] = time.perf_counter() - t0
    return result


def _as_trigger(incident: dict) -> Trigger:
    return Trigger(0, incident["detector"], incident["kind"], incident.get("segment") or {},
                   parse_ts(incident["detected_at"]), dedup_key=incident.get("dedup_key") or "")


def resolve_marks(feedback: list[dict], sweeps: list[DetectorSweep]) -> list[Mark]:
    """(dedup_key, detected_at) of every mark: its own detected_at, else the time of the trigger
    with its incident_id in a replay (replay reproduces the worker's incident ids), else None (every
    trigger of that dedup key in the recording is a false alarm)."""
    found: dict[str, float] = {}
    for s in sweeps:
        for c in s.candidates:
            for i in c.incidents:
                if i["event_action"] == "trigger" and i.get("incident_id"):
                    found.setdefault(i["incident_id"], parse_ts(i["detected_at"]))
    marks: list[Mark] = []
    for m in feedback:
        at = parse_ts(m["detected_at"]) if m.get("detected_at") else found.get(m.get("incident_id") or "")
        marks.append((m["dedup_key"], at))
    return marks


def _choose(s: DetectorSweep, labelled: bool, budget: Optional[float], pick_by_volume: bool) -> None:
    cands = s.candidates
    configured = cands[0]
    if not labelled and not pick_by_volume:
        s.chosen = None
        return
    if budget is None:  # pragma: no cover - tune() refuses this
        raise ValueError("budget needed")
    ok = [c for c in cands if c.fa_per_day <= budget + 1e-9]
    if labelled and s.windows:
        if ok:
            s.chosen = max(ok, key=lambda c: (c.row.recall or 0.0, round(nab_of(c), 6),
                                              -c.fa_per_day, c.configured, -c.index))
            s.within_budget = True
            r = s.chosen.row
            s.note = (f"recall {r.recall:.2f}, NAB {r.nab_score:.1f}, {s.chosen.fa_per_day:.2f} false "
                      f"alarms/day among {len(ok)} of {len(cands)} settings within the budget")
        else:
            s.chosen = min(cands, key=lambda c: (c.fa_per_day, -(c.row.recall or 0.0),
                                                 -nab_of(c), not c.configured, c.index))
            s.within_budget = False
            s.note = (f"NO SETTING MEETS THE BUDGET of {budget:g} false alarms/day; chose the least "
                      f"noisy ({s.chosen.fa_per_day:.2f}/day, recall {s.chosen.row.recall:.2f})")
        return
    if labelled:  # no labelled window of this kind: recall cannot be measured
        if configured in ok:
            s.chosen, s.within_budget = configured, True
            s.note = (f"no labelled window of kind {s.kind}: recall cannot be measured; kept the "
                      f"configured setting ({configured.fa_per_day:.2f} false alarms/day, within budget)")
            if s.skipped:
                s.note += f"; its {s.skipped} other settings were not replayed"
        else:
            s.chosen = min(cands, key=lambda c: (c.fa_per_day, not c.configured, c.index))
            s.within_budget = s.chosen.fa_per_day <= budget + 1e-9
            s.note = (f"no labelled window of kind {s.kind}; the configured setting raises "
                      f"{configured.fa_per_day:.2f} false alarms/day, over the budget: chose the least "
                      f"noisy setting ({s.chosen.fa_per_day:.2f}/day)")
            if not s.within_budget:
                s.note = "NO SETTING MEETS THE BUDGET; " + s.note
        return
    # Unlabelled, --pick-by-volume: the most sensitive setting (most alerts) within the budget,
    # among those raising the fewest alerts an on-call marked as false alarms (--feedback).
    if ok:
        s.chosen = max(ok, key=lambda c: (-c.marked, c.fa_per_day, c.configured, -c.index))
        s.within_budget = True
        s.note = (f"most alerts within the budget: {s.chosen.fa_per_day:.2f}/day "
                  f"({len(ok)} of {len(cands)} settings within it)")
    else:
        s.chosen = min(cands, key=lambda c: (c.fa_per_day, not c.configured, c.index))
        s.within_budget = False
        s.note = (f"NO SETTING MEETS THE BUDGET of {budget:g} alerts/day; chose the quietest "
                  f"({s.chosen.fa_per_day:.2f}/day)")


def _timelines(result: TuneResult, jobs: int, progress: bool) -> None:
    tasks = []
    for si, s in enumerate(result.sweeps):
        windows = []
        for lab in result.labels or []:
            if lab["kind"] != s.kind or is_optional(lab):
                continue
            start, end = parse_ts(lab["start"]), parse_ts(lab["end"])
            pad = max(TIMELINE_PAD_S, 0.5 * (end - start))
            windows.append({"kind": lab["kind"], "start": start, "end": end,
                            "segment": dict(lab.get("segment") or {}), "run_id": lab.get("run_id"),
                            "note": lab.get("note", ""),
                            "lo": start - result.slack_before_s - pad,
                            "hi": end + result.slack_after_s + pad})
        if windows and s.chosen is not None:
            tasks.append(("timeline", si, (s.chosen.params, windows)))
    for _, si, out, _secs in _run_tasks(tasks, jobs, progress, "timelines"):
        result.sweeps[si].timeline = out


# -- CLI -------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--events", required=True, help="recorded events, JSON Lines")
    parser.add_argument("--labels", default=None, help="labelled windows, JSON Lines (omit: volumes only)")
    parser.add_argument("--config", default=None,
                        help="source config directory (default: settings config_dir)")
    parser.add_argument("--max-false-alarms-per-day", dest="budget", type=float, default=None,
                        help="budget per detector (with labels: false alarms; without: alerts)")
    parser.add_argument("--out-config", default=None, help="write the tuned config directory here")
    parser.add_argument("--report", default="tune-report.md", help="Markdown report; PNGs go next to it")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (fork); default 2")
    parser.add_argument("--detectors", default=None,
                        help="comma-separated names to tune (default: all enabled)")
    parser.add_argument("--pick-by-volume", action="store_true",
                        help="without labels: pick the most sensitive setting within the budget")
    parser.add_argument("--slack-s", type=float, default=DEFAULT_SLACK_BEFORE_S,
                        help="match triggers this long before a window's start (default 120)")
    parser.add_argument("--grace-s", type=float, default=DEFAULT_SLACK_AFTER_S,
                        help="match triggers this long after a window's end (default 900)")
    parser.add_argument("--a-fp", type=float, default=A_FP, help="NAB cost of a false alarm (default 0.11)")
    parser.add_argument("--feedback", default=None, metavar="MARKS.jsonl",
                        help="false alarms marked by on-call (semwatch mark-false-alarm): a marked "
                             "trigger counts as a false alarm of its detector, whatever the labels say")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs and the timeline replays")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from semwatch.settings import load_settings

    config_dir = args.config or str(load_settings().config_dir)
    config = load_config(config_dir)
    labels = None
    feedback = None
    try:
        if args.labels:
            labels = load_labels(args.labels)
        if args.feedback:
            feedback = load_feedback(args.feedback)
    except (InputError, OSError) as exc:
        print(f"semwatch tune: {exc}", file=sys.stderr)
        return 2
    if labels is not None and args.budget is None:
        print("semwatch tune: --max-false-alarms-per-day is required with --labels", file=sys.stderr)
        return 2
    if args.pick_by_volume and (labels is not None or args.budget is None):
        print("semwatch tune: --pick-by-volume is for unlabelled data and needs "
              "--max-false-alarms-per-day", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        events, rejected = load_events(args.events)
    except OSError as exc:
        print(f"semwatch tune: {args.events}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"semwatch tune: {len(events)} events parsed in {time.perf_counter() - t0:.1f} s "
          f"({len(rejected)} rejected)", file=sys.stderr)
    for lineno, reason in rejected[:10]:
        print(f"{args.events}:{lineno}: rejected: {reason}", file=sys.stderr)
    if not events:
        print("semwatch tune: no valid events", file=sys.stderr)
        return 2
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()] if args.detectors else None
    try:
        result = tune(events, config, labels, budget=args.budget, jobs=max(1, args.jobs),
                      detectors=detectors, pick_by_volume=args.pick_by_volume,
                      slack_before_s=args.slack_s, slack_after_s=args.grace_s, a_fp=args.a_fp,
                      timelines=not args.no_plots, progress=not args.no_progress,
                      rejected=len(rejected), feedback=feedback)
    except ValueError as exc:
        print(f"semwatch tune: {exc}", file=sys.stderr)
        return 2
    del events
    out_config = None
    if args.out_config and result.picked:
        out_config = Path(args.out_config)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        unit = "false alarms" if result.labelled else "alerts"
        header = (f"# Tuned by `semwatch tune` on {stamp} from {Path(config_dir)}/semwatch.yaml:\n"
                  f"# events {args.events}, budget {args.budget:g} {unit}/day per detector; "
                  f"report {args.report}.\n")
        write_tuned_config(Path(config_dir), out_config, result.chosen_params(), header)
    elif args.out_config:
        print("semwatch tune: no labels and no --pick-by-volume: no tuned config written "
              f"(see the volumes in {args.report})", file=sys.stderr)
    pngs = write_report(result, Path(args.report), events_path=args.events, config_dir=config_dir,
                        out_config=out_config, plots=not args.no_plots)
    print(summary_text(result))
    print(f"\nreport: {args.report}" + (f" ({len(pngs)} plots)" if pngs else ""))
    if out_config:
        print(f"tuned config: {out_config} (verified with load_config)")
    return 0
