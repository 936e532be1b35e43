"""``semwatch tune``: sweep each detector's sensitivity knobs under a false-alarm budget.

    semwatch tune --events E.jsonl --labels L.jsonl --max-false-alarms-per-day 1 \\
                  --out-config tuned/ --report tune/report.md [--jobs 2] [--config config]
    semwatch tune --events E.jsonl [--max-false-alarms-per-day 3 --pick-by-volume --out-config tuned/]

How it works
------------
1. The recording is parsed once (:class:`RunEvent`), then replayed once through an engine with no
   detectors: that enriches every event in place (refusal verdicts from the classifier, prices for
   events without ``cost_usd``) exactly as every later run would. Enrichment only fills fields that
   are None, so later runs find nothing to change and all runs share the same event objects: no
   copy, no re-parse. (Measured on one simulated day, 260k events: parsing 18 s, a shallow
   ``model_copy`` per run 6 s, re-classifying refusals ~6 s per run, sharing the pre-enriched list 0 s.)
2. For every enabled detector and rule (``--detectors`` to pick some), the candidates are its
   configured setting plus the grid of :mod:`semwatch.tune_spaces`. Each candidate is replayed
   through the real engine with that detector alone (``SemwatchConfig.with_params`` +
   :func:`semwatch.replay.replay_events`) and its triggers are matched to the labels by
   :func:`semwatch.evaluate.evaluate`. With ``--jobs 2`` the runs go to a fork-started process pool:
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

Without labels, the report lists the alert volume per day of every candidate, so that a budget
can be chosen; no config is written unless ``--pick-by-volume`` asks for the most sensitive setting
(the most alerts per day) within ``--max-false-alarms-per-day``.

Detectors are independent in the engine (state is keyed by detector name; only the shared change
history, which feeds ``suspected_changes``, is common), so the union of the chosen runs' triggers
is what the tuned config raises on the same data; the report evaluates that union as "combined".
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import shutil
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

import yaml

from detectors.base import REGISTRY, DetectorParams
from semwatch.config import ConfigError, SemwatchConfig, load_config
from semwatch.evaluate import (
    DEFAULT_SLACK_AFTER_S, DEFAULT_SLACK_BEFORE_S, A_FP, EvaluationReport, InputError, Row,
    evaluate, fmt_duration, format_table, load_labels, segments_consistent,
)
from semwatch.models import RunEvent, format_ts, is_optional, parse_ts
from semwatch.replay import read_events, replay_events
from semwatch.tune_spaces import candidates as space_candidates, describe, unknown_params

# Set in the parent before the pool forks; workers read them (never pickled).
_EVENTS: list[RunEvent] = []
_CONFIG: Optional[SemwatchConfig] = None

TIMELINE_PAD_S = 1800.0


# -- data ------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    detector: str
    index: int
    update: dict[str, Any]
    params: DetectorParams
    label: str
    configured: bool
    incidents: list[dict] = field(default_factory=list)
    row: Optional[Row] = None
    triggers: int = 0
    alerts_per_day: Optional[float] = None
    seconds: float = 0.0

    @property
    def fa_per_day(self) -> float:
        if self.row is not None and self.row.false_alarms_per_day is not None:
            return self.row.false_alarms_per_day
        return self.alerts_per_day or 0.0


@dataclass
class DetectorSweep:
    name: str
    type: str
    kind: str
    configured: DetectorParams
    candidates: list[Candidate]
    windows: int = 0
    chosen: Optional[Candidate] = None
    within_budget: Optional[bool] = None
    note: str = ""
    unknown_space: list[str] = field(default_factory=list)
    skipped: int = 0  # settings not replayed (configured within budget, no labelled window)
    timeline: Optional[dict] = None  # {"incidents": [...], "series": [...]} with the chosen setting


@dataclass
class TuneResult:
    sweeps: list[DetectorSweep]
    events: int
    rejected: int
    first_ts: Optional[float]
    last_ts: Optional[float]
    days: Optional[float]
    labels: Optional[list[dict]]
    budget: Optional[float]
    slack_before_s: float
    slack_after_s: float
    a_fp: float
    jobs: int
    seconds: dict[str, float] = field(default_factory=dict)
    combined: Optional[EvaluationReport] = None  # chosen settings, union of their runs
    configured_combined: Optional[EvaluationReport] = None  # configured settings, same data
    picked: bool = False  # a tuned setting was picked (labels, or --pick-by-volume)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def chosen_params(self) -> dict[str, DetectorParams]:
        return {s.name: s.chosen.params for s in self.sweeps if s.chosen is not None}

    def warnings(self) -> list[str]:
        return [f"{s.name}: {s.note}" for s in self.sweeps if s.within_budget is False]


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


def enrich(events: list[RunEvent], config: SemwatchConfig) -> None:
    """Fill refusal verdicts and prices in place, as every replay would (idempotent afterwards)."""
    replay_events(events, config.with_params([]))


# -- worker side -------------------------------------------------------------------------------------
def _slim(inc) -> dict:
    d = inc.to_dict()
    return {k: d.get(k) for k in ("event_action", "kind", "detector", "severity", "segment",
                                  "detected_at", "window_start", "window_end", "summary",
                                  "observed", "baseline", "threshold", "score")}


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

    Signals by detector type (all read from the state the detector keeps anyway):
    false_refusal_spike — the window's refusal rate, its baseline and the materiality line
    max(baseline + min_increase, min_ratio x baseline); rate_spike — the observed window value, the
    usual value and usual x min_ratio; threshold / wrong_entity_rate — the window value against
    above/below; run_outlier — the labelled run's cumulative value against the segment's outlier
    line; runaway_loop — the labelled run's steps against max_steps. Others (wrong_entity_action):
    none; the plot then shows events per minute in the labelled segment.
    """

    def __init__(self, params: DetectorParams, window: dict, lo: float, hi: float):
        self.p = params
        self.w = window
        self.lo, self.hi = lo, hi
        # (time, signal, baseline, threshold, second signal)
        self.points: list[tuple[float, Optional[float], Optional[float], Optional[float],
                                Optional[float]]] = []
        self.signal2: Optional[str] = None
        self.threshold_label = "threshold"
        self.rate: Counter = Counter()
        self.marker: Any = None
        self.signal: Optional[str] = None
        self.unavailable = ""
        seg = window["segment"]
        missing = [f for f in params.group_by if f not in seg]
        self.seg = {f: seg.get(f, "") for f in params.group_by}
        t = params.type
        if t == "wrong_entity_action":
            self.unavailable = "a point detector: no per-evaluation signal"
        elif missing:
            self.unavailable = f"the label's segment lacks {missing} (group_by)"
        elif t in ("run_outlier", "runaway_loop") and not window.get("run_id"):
            self.unavailable = "the label names no run_id"
        elif t == "false_refusal_spike":
            self.signal = f"refusal rate over {params.window_s:g} s"
            self.threshold_label = "material: max(baseline + min_increase, min_ratio × baseline)"
        elif t == "rate_spike":
            agg = "mean per event" if params.aggregate == "mean" else "per minute"
            self.signal = f"{params.field} {agg} over {params.window_s:g} s"
            self.threshold_label = "usual × min_ratio (z and min_increase must hold too)"
        elif t in ("threshold", "wrong_entity_rate"):
            what = getattr(params, "aggregate", "rate")
            field_name = getattr(params, "field", None) or "out-of-scope calls"
            self.signal = f"{what} of {field_name} over {params.window_s:g} s"
        elif t == "runaway_loop":
            self.signal = f"steps of the labelled run / max_steps ({params.max_steps})"
            self.threshold_label = "limit"
            if getattr(params, "max_repeated_calls", None):
                self.signal2 = (f"repeated tool calls / max_repeated_calls "
                                f"({params.max_repeated_calls})")
        elif t == "run_outlier":
            self.signal = f"{params.field} of the labelled run (cumulative)" if params.per == "run" \
                else f"{params.field} per event"
            self.threshold_label = "outlier line (once the baseline has min_samples)"
        else:
            self.unavailable = f"no probe for detector type {t!r}"

    def sample(self, engine, detector, event: RunEvent) -> None:
        if segments_consistent(self.w["segment"], {k: event.segment_value(k) for k in self.w["segment"]
                                                  if event.segment_value(k) is not None}):
            self.rate[int(event.ts // 60)] += 1
        if self.signal is None:
            return
        try:
            self._signal(engine, detector, event)
        except (AttributeError, TypeError, IndexError, KeyError) as exc:  # a detector changed shape
            self.signal = None
            self.unavailable = f"probe failed ({type(exc).__name__}: {exc})"
            self.points.clear()

    def _signal(self, engine, det, event: RunEvent) -> None:
        p = self.p
        t = p.type
        if t == "false_refusal_spike":
            st = engine.get(det, self.seg)
            if st is None or not st.last_eval or st.last_eval[5] == self.marker:
                return
            n, k, rate, p0, _, at = st.last_eval[:6]
            self.marker = at
            self.points.append((at, rate if n else None, p0,
                                max(p0 + p.min_increase, p.min_ratio * p0), None))
        elif t == "rate_spike":
            st = engine.get(det, self.seg)
            if st is None or st.closed == self.marker:
                return
            self.marker = st.closed
            x, e = st.last_obs, st.last_expected
            thr = e * p.min_ratio if (e == e and p.direction != "down") else None
            self.points.append((st.bucket * p.bucket_s, x if x == x else None, e if e == e else None,
                                thr, None))
        elif t in ("threshold", "wrong_entity_rate"):
            st = engine.get(det, self.seg)
            if st is None or st.closed is None or st.closed == self.marker:
                return
            self.marker = st.closed
            level = p.above if getattr(p, "above", None) is not None else getattr(p, "below", None)
            self.points.append((st.closed * det.params.bucket, st.value, None, level, None))
        elif t in ("run_outlier", "runaway_loop"):
            if event.run_id != self.w.get("run_id"):
                return
            run = engine.get(det, {**self.seg, "run_id": self.w["run_id"]})
            if run is None:
                return
            if t == "runaway_loop":
                steps = run.steps / p.max_steps if p.max_steps else None
                cap = getattr(p, "max_repeated_calls", None)
                reps = run.repeats / cap if cap else None
                self.points.append((event.ts, steps, None, 1.0, reps))
            else:
                st = engine.get(det, self.seg)
                hi = st.hi if st is not None and math.isfinite(st.hi) else (p.max_value or None)
                base = st.median_value if st is not None and st.median_value == st.median_value else None
                self.points.append((event.ts, run.total, base, hi, None))

    def result(self) -> dict:
        return {"window": self.w, "lo": self.lo, "hi": self.hi, "signal": self.signal,
                "signal2": self.signal2, "threshold_label": self.threshold_label,
                "unavailable": self.unavailable, "points": self.points,
                "rate": sorted(self.rate.items())}


def _run_timeline(params: DetectorParams, windows: list[dict]) -> dict:
    cfg = _Capturing(_CONFIG.with_params([params]))
    probes = [_Probe(params, w, w["lo"], w["hi"]) for w in windows]
    lo = min(p.lo for p in probes)
    hi = max(p.hi for p in probes)

    def stream() -> Iterator[RunEvent]:
        det = None
        for ev in _EVENTS:
            yield ev  # replay_events processes it before asking for the next one
            if lo <= ev.ts <= hi:
                engine = cfg.built
                if det is None:
                    det = next(d for d in engine.detectors if d.name == params.name)
                for pr in probes:
                    if pr.lo <= ev.ts <= pr.hi:
                        pr.sample(engine, det, ev)

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
         rejected: int = 0, enriched: bool = False) -> TuneResult:
    """Sweep, evaluate and choose (see the module docstring). ``events`` are parsed events in
    event-time order (:func:`load_events`); they are enriched in place unless ``enriched``."""
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
        enrich(events, config)
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
                 for i, (u, cp) in enumerate(space_candidates(p, spaces))]
        sweeps.append(DetectorSweep(p.name, p.type, kind, p, cands, windows=label_kinds.get(kind, 0),
                                    unknown_space=unknown_params(p, spaces)))

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

        def score(incidents: list[dict], kinds: dict[str, str]) -> EvaluationReport:
            return evaluate(incidents, labels, detectors=kinds, days=days,
                            days_from="event span of the recording", slack_before_s=slack_before_s,
                            slack_after_s=slack_after_s, a_fp=a_fp)

        for s in sweeps:
            for c in s.candidates:
                c.triggers = sum(1 for i in c.incidents if i["event_action"] == "trigger")
                c.alerts_per_day = c.triggers / days if days else None
                if labels is not None:
                    c.row = score(c.incidents, {s.name: s.kind}).row(s.name, s.kind)
            _choose(s, labels is not None, budget, pick_by_volume)

        result = TuneResult(sweeps, len(events), rejected, first, last, days, labels, budget,
                            slack_before_s, slack_after_s, a_fp, jobs, seconds,
                            picked=labels is not None or pick_by_volume)
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


def _nab(c: Candidate, missing: float = -1e9) -> float:
    score = c.row.nab_score if c.row is not None else None
    return missing if score is None else score


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
            s.chosen = max(ok, key=lambda c: (c.row.recall or 0.0, round(_nab(c), 6),
                                              -c.fa_per_day, c.configured, -c.index))
            s.within_budget = True
            r = s.chosen.row
            s.note = (f"recall {r.recall:.2f}, NAB {r.nab_score:.1f}, {s.chosen.fa_per_day:.2f} false "
                      f"alarms/day among {len(ok)} of {len(cands)} settings within the budget")
        else:
            s.chosen = min(cands, key=lambda c: (c.fa_per_day, -(c.row.recall or 0.0),
                                                 -_nab(c), not c.configured, c.index))
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
    # Unlabelled, --pick-by-volume: the most sensitive setting (most alerts) within the budget.
    if ok:
        s.chosen = max(ok, key=lambda c: (c.fa_per_day, c.configured, -c.index))
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


# -- the tuned config ----------------------------------------------------------------------------------
def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return text.removesuffix("...").strip()


def rewrite_semwatch_yaml(text: str, changes: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """Set ``changes`` (detector/rule name -> {param: value}) in the YAML text, keeping comments
    and layout: values are replaced where they are; missing keys are added after the entry's last
    key, marked ``# tuned``."""
    root = yaml.compose(text)
    edits: list[tuple[int, int, str]] = []
    found = set()
    if root is not None and isinstance(root, yaml.MappingNode):
        for knode, vnode in root.value:
            if knode.value not in ("detectors", "rules") or not isinstance(vnode, yaml.SequenceNode):
                continue
            for item in vnode.value:
                if not isinstance(item, yaml.MappingNode):
                    continue
                keys = {k.value: (k, v) for k, v in item.value}
                name = keys.get("name", (None, None))[1]
                if name is None or name.value not in changes:
                    continue
                found.add(name.value)
                indent = " " * item.value[0][0].start_mark.column
                last_end = max(v.end_mark.index for _, v in item.value)
                line_end = text.find("\n", last_end)
                line_end = len(text) if line_end < 0 else line_end
                for param, value in changes[name.value].items():
                    if param in keys:
                        v = keys[param][1]
                        old = text[v.start_mark.index:v.end_mark.index]
                        new = _yaml_scalar(value)
                        eol = text.find("\n", v.end_mark.index)
                        eol = len(text) if eol < 0 else eol
                        rest = text[v.end_mark.index:eol]
                        if len(new) < len(old) and rest.startswith(" "):
                            new = new.ljust(len(old))  # keep the comment column
                        elif len(new) > len(old) and rest.startswith(" " * (len(new) - len(old) + 1)):
                            rest = rest[len(new) - len(old):]
                        mark = f"[tuned; was {old}]"
                        rest = f"{rest}  {mark}" if "#" in rest else f"{rest.rstrip()}  # {mark}"
                        edits.append((v.start_mark.index, eol, new + rest))
                    else:
                        edits.append((line_end, line_end,
                                      f"\n{indent}{param}: {_yaml_scalar(value)}  # tuned"))
    missing = set(changes) - found
    if missing:
        raise ConfigError(f"semwatch.yaml: no detector or rule named {sorted(missing)} to tune")
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + new + text[end:]
    return header + text


def changed_fields(before: DetectorParams, after: DetectorParams) -> dict[str, Any]:
    a, b = before.model_dump(), after.model_dump()
    return {k: b[k] for k in b if a.get(k) != b[k]}


def write_tuned_config(src: Path, out: Path, chosen: Mapping[str, DetectorParams],
                       header: str = "") -> SemwatchConfig:
    """Copy ``src`` to ``out`` with the chosen parameters in ``semwatch.yaml``; verify by loading it.

    Every field of a chosen detector that differs from what the source file says *now* is
    written, so the tuned file holds exactly what was evaluated even if the source was edited
    during the sweep.
    """
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise ConfigError(f"{out}: the tuned config must not overwrite its source directory")
    current = {p.name: p for p in load_config(src).detector_params}
    missing = sorted(set(chosen) - set(current))
    if missing:
        raise ConfigError(f"{src / 'semwatch.yaml'}: no detector or rule named {missing} any more")
    shutil.copytree(src, out, dirs_exist_ok=True)
    changes = {name: changed_fields(current[name], p) for name, p in chosen.items()}
    changes = {k: v for k, v in changes.items() if v}
    path = out / "semwatch.yaml"
    path.write_text(rewrite_semwatch_yaml((src / "semwatch.yaml").read_text(encoding="utf-8"),
                                          changes, header), encoding="utf-8")
    loaded = load_config(out)
    by_name = {p.name: p for p in loaded.detector_params}
    for name, p in chosen.items():
        if by_name.get(name) != p:
            raise ConfigError(f"{path}: {name} did not load back as tuned "
                              f"(differs in {sorted(changed_fields(p, by_name[name]))})")
    return loaded


# -- report ------------------------------------------------------------------------------------------
def _fmt(x: Optional[float], spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def plot_tradeoff(s: DetectorSweep, budget: Optional[float], labelled: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra: list = []
    if labelled and s.windows:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
        groups: dict[tuple[float, float], list[Candidate]] = {}
        for c in s.candidates:
            groups.setdefault((round(c.fa_per_day, 6), round(c.row.recall or 0.0, 6)), []).append(c)
        xs = [k[0] for k in groups]
        ys = [k[1] for k in groups]
        nab = [max(_nab(c, 0.0) for c in g) for g in groups.values()]
        sizes = [40 + 25 * (len(g) - 1) for g in groups.values()]
        sc = ax.scatter(xs, ys, c=nab, s=sizes, cmap="viridis", vmin=min(0.0, min(nab)), vmax=100,
                        edgecolors="k", linewidths=0.5, zorder=3, label="candidates (size: how many)")
        fig.colorbar(sc, ax=ax, label="best NAB score at the point")
        for (x, y), g in groups.items():
            if len(g) > 1:
                ax.annotate(f"×{len(g)}", (x, y), textcoords="offset points", xytext=(7, -10), fontsize=8)
        conf = s.candidates[0]
        ax.scatter([conf.fa_per_day], [conf.row.recall or 0.0], s=260, facecolors="none",
                   edgecolors="tab:blue", linewidths=1.8, zorder=4, label="configured")
        if s.chosen is not None:
            ax.scatter([s.chosen.fa_per_day], [s.chosen.row.recall or 0.0], marker="*", s=380,
                       color="tab:red", edgecolors="k", zorder=5, label=f"chosen: {s.chosen.label}")
        ax.set_ylabel(f"recall ({s.windows} labelled {s.kind} windows)")
        ax.set_ylim(-0.05, 1.08)
        ax.set_xlabel("false alarms per day")
    else:
        fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.32 * len(s.candidates)), dpi=110)
        labels = [c.label for c in s.candidates]
        vals = [c.fa_per_day for c in s.candidates]
        colors = ["tab:red" if c is s.chosen else ("tab:blue" if c.configured else "tab:gray")
                  for c in s.candidates]
        from matplotlib.patches import Patch

        bars = ax.barh(range(len(vals)), vals, color=colors)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=7, padding=2)
        ax.set_yticks(range(len(vals)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("false alarms per day" if labelled else "alerts per day")
        ax.set_xlim(right=max(vals + [budget or 0.0, 1.0]) * 1.15)
        extra = [Patch(color=color, label=text) for color, text in
                 (("tab:red", "chosen"), ("tab:blue", "configured"), ("tab:gray", "other settings"))]
    if budget is not None:
        ax.axvline(budget, color="tab:red", linestyle="--", linewidth=1.2, label=f"budget {budget:g}/day")
    ax.set_xlim(left=-0.05 * max(1.0, ax.get_xlim()[1]))
    ax.set_title(f"{s.name} ({s.type}): {len(s.candidates)} settings", fontsize=11)
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if extra:  # bars: the legend goes outside, next to the plot
        ax.legend(handles=handles + extra, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_window(index: int, label: dict, panels: list[tuple[DetectorSweep, dict]], path: Path,
                slack_before_s: float, slack_after_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, end = parse_ts(label["start"]), parse_ts(label["end"])
    n = len(panels)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.6 * n + 0.9), dpi=100, sharex=True, squeeze=False)
    seg = "/".join(str(v) for v in (label.get("segment") or {}).values())
    note = textwrap.shorten(label.get("note", ""), 110)
    fig.suptitle(f"window {index}: {label['kind']} on {seg}, {format_ts(start)[:19]} to "
                 f"{format_ts(end)[11:19]} UTC\n{note}", fontsize=9)

    def rel(t: float) -> float:
        return (t - start) / 60.0

    for ax, (s, series) in zip(axes[:, 0], panels):
        ax.axvspan(rel(start - slack_before_s), rel(start), color="tab:orange", alpha=0.10)
        ax.axvspan(rel(start), rel(max(end, start + 20)), color="tab:red", alpha=0.18,
                   label="labelled window")
        ax.axvspan(rel(max(end, start + 20)), rel(end + slack_after_s), color="tab:orange", alpha=0.12,
                   label="match slack / grace")
        lo, hi = series["lo"], series["hi"]
        incs = [i for i in (s.timeline or {}).get("incidents", [])
                if lo <= parse_ts(i["detected_at"]) <= hi
                and segments_consistent(label.get("segment") or {}, i.get("segment") or {})]
        pts = series["points"]
        ax2 = None
        if series["signal"] and pts:
            ts = [rel(p[0]) for p in pts]
            ax.plot(ts, [p[1] if p[1] is not None else math.nan for p in pts], color="tab:blue",
                    linewidth=1.3, label=series["signal"])
            if series.get("signal2"):
                ax.plot(ts, [p[4] if p[4] is not None else math.nan for p in pts], color="tab:purple",
                        linewidth=1.3, label=series["signal2"])
            if any(p[2] is not None for p in pts):
                ax.plot(ts, [p[2] if p[2] is not None else math.nan for p in pts], color="tab:gray",
                        linestyle=":", linewidth=1.2, label="baseline")
            if any(p[3] is not None for p in pts):
                ax.step(ts, [p[3] if p[3] is not None else math.nan for p in pts], where="post",
                        color="tab:red", linestyle="--", linewidth=1.2,
                        label=series.get("threshold_label") or "threshold")
            ax.set_ylabel("signal", fontsize=8)
            title = f"{s.name} ({s.chosen.label if s.chosen else ''}): per-evaluation signal"
        else:
            rate = series["rate"]
            if rate:
                ax.bar([rel(m * 60 + 30) for m, _ in rate], [c for _, c in rate], width=1.0,
                       color="tab:blue", alpha=0.55, label="events/min in the labelled segment")
            thr = [i["threshold"] for i in incs if i["event_action"] == "trigger" and i.get("threshold")]
            if thr:
                ax2 = ax.twinx()
                ax2.axhline(thr[0], color="tab:red", linestyle="--", linewidth=1.2, label="trigger threshold")
                obs = [(rel(parse_ts(i["detected_at"])), i["observed"]) for i in incs
                       if i["event_action"] == "trigger" and i.get("observed") is not None]
                if obs:
                    ax2.scatter([o[0] for o in obs], [o[1] for o in obs], color="tab:red", zorder=5,
                                label="observed at trigger")
                ax2.set_ylabel("value at trigger", fontsize=8)
            ax.set_ylabel("events/min", fontsize=8)
            why = series["unavailable"] or "no signal recorded"
            title = f"{s.name} ({s.chosen.label if s.chosen else ''}): no signal — {why}; event rate shown"
        for i in incs:
            x = rel(parse_ts(i["detected_at"]))
            if i["event_action"] == "trigger":
                ax.axvline(x, color="tab:green", linewidth=2.0)
            else:
                ax.axvline(x, color="black", linestyle=":", linewidth=1.2)
        ax.plot([], [], color="tab:green", linewidth=2.0, label="trigger")
        ax.plot([], [], color="black", linestyle=":", linewidth=1.2, label="resolve")
        ax.set_title(title, fontsize=8.5, loc="left")
        ax.grid(True, alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        if ax2 is not None:  # one legend for both y axes
            h2, n2 = ax2.get_legend_handles_labels()
            handles, names = handles + h2, names + n2
        ax.legend(handles, [textwrap.fill(t, 34) for t in names], fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.01 if ax2 is None else 1.07, 1.0), borderaxespad=0.0)
        ax.set_xlim(rel(lo), rel(hi))
    axes[-1, 0].set_xlabel("minutes from the labelled start")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: TuneResult, path: Path, *, events_path: str = "", config_dir: str = "",
                 out_config: Optional[Path] = None, plots: bool = True) -> list[Path]:
    """The Markdown report and its PNGs (next to it, named after it). Returns the PNG paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.stem
    pngs: list[Path] = []
    L: list[str] = []
    budget = result.budget
    unit = "false alarms/day" if result.labelled else "alerts/day"
    L.append("# semwatch tune report\n")
    span = (f"{format_ts(result.first_ts)} to {format_ts(result.last_ts)} ({result.days:.2f} days)"
            if result.days else "(no span)")
    L.append(f"- events: `{events_path}` — {result.events} events, {result.rejected} rejected, {span}")
    L.append(f"- config: `{config_dir}`" + (f" → tuned config `{out_config}`" if out_config else
                                            " (no tuned config written)"))
    n_optional = sum(1 for lab in result.labels or [] if is_optional(lab))
    L.append(f"- labels: {len(result.labels or []) - n_optional} windows"
             + (f" (and {n_optional} optional ones)" if n_optional else "") if result.labelled else
             "- labels: none — alert volumes only" + ("; picked by volume" if result.picked else ""))
    L.append(f"- budget: {budget:g} {unit} per detector" if budget is not None else "- budget: none given")
    runs = sum(len(s.candidates) for s in result.sweeps)
    sweep_s = result.seconds.get("sweep", 0.0)
    cpu = sum(c.seconds for s in result.sweeps for c in s.candidates)
    rate = result.events * runs / cpu if cpu else 0.0
    L.append(f"- {runs} replays on {result.jobs} process(es) in {sweep_s:.0f} s wall "
             f"({rate:,.0f} events/s per replay); enrichment {result.seconds.get('enrich', 0):.0f} s, "
             f"timelines {result.seconds.get('timelines', 0):.0f} s")
    L.append(f"- matching (labels): kind, consistent segment, detected_at in [start − "
             f"{result.slack_before_s:g} s, end + {result.slack_after_s:g} s]; NAB A_fp = {result.a_fp:g}\n")
    warnings = result.warnings()
    if warnings:
        L.append("## ⚠ Budget not met\n")
        for w in warnings:
            L.append(f"- **{w}**")
        L.append("")
    L.append("## Chosen settings\n")
    if result.labelled:
        L.append("Per detector: the highest recall within the budget, then the highest NAB score "
                 "(earliness), then the fewest false alarms, then the configured setting.\n")
        L.append("| detector | type | kind | windows | settings | chosen | recall | FA/day | NAB "
                 "| TTD p50 | within budget | note |")
        L.append("|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---|")
        for s in result.sweeps:
            c = s.chosen
            r = c.row if c else None
            L.append(f"| {s.name} | {s.type} | {s.kind} | {s.windows} | {len(s.candidates)} | "
                     f"{c.label if c else '-'} | {_fmt(r.recall if r else None)} | "
                     f"{_fmt(c.fa_per_day if c else None)} | {_fmt(r.nab_score if r else None, '.1f')} | "
                     f"{fmt_duration(r.ttd_median_s) if r else '-'} | "
                     f"{'yes' if s.within_budget else '**NO**'} | {s.note} |")
        total = sum(s.chosen.fa_per_day for s in result.sweeps if s.chosen)
        L.append(f"\nCombined, the chosen settings raise **{total:.2f} false alarms/day** on this "
                 f"data (sum over detectors; the budget applies per detector).\n")
        if result.combined is not None:
            L.append("### Chosen settings on the tuning data (all detectors together)\n")
            L.append(format_table(result.combined, markdown=True) + "\n")
        if result.configured_combined is not None:
            L.append("### Configured settings on the same data, for comparison\n")
            L.append(format_table(result.configured_combined, markdown=True) + "\n")
    else:
        L.append(f"Alert volume per day of every candidate (all alerts count: without labels none can "
                 f"be told true or false).\n")
        L.append("| detector | type | setting | alerts | alerts/day | chosen |")
        L.append("|---|---|---|---:|---:|---|")
        for s in result.sweeps:
            for c in s.candidates:
                mark = "**chosen**" if c is s.chosen else ""
                L.append(f"| {s.name} | {s.type} | {c.label} | {c.triggers} "
                         f"| {_fmt(c.alerts_per_day)} | {mark} |")
        L.append("")
        if result.picked:
            L.append("Picked per detector: the most alerts per day within the budget (the most "
                     "sensitive setting the budget allows).\n")
            for s in result.sweeps:
                L.append(f"- {s.name}: {s.chosen.label if s.chosen else '-'} — {s.note}")
            L.append("")
    unknown = [(s.name, s.unknown_space) for s in result.sweeps if s.unknown_space]
    if unknown:
        L.append("Sweep-space entries these detectors do not have (fix `semwatch/tune_spaces.py`): "
                 + "; ".join(f"{n}: {', '.join(u)}" for n, u in unknown) + "\n")

    L.append("## Detectors\n")
    for s in result.sweeps:
        L.append(f"### {s.name} ({s.type}, kind {s.kind})\n")
        if s.skipped:
            L.append(f"{s.note}.\n")
        if plots and len(s.candidates) > 1:
            png = path.parent / f"{stem}-tradeoff-{_safe(s.name)}.png"
            plot_tradeoff(s, budget, result.labelled, png)
            pngs.append(png)
            L.append(f"![{s.name}: recall against false alarms per day]({png.name})\n")
        if result.labelled:
            L.append("| setting | triggers | FA | FA/day | precision | recall | NAB | TTD p50 | TTD p90 |")
            L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            order = sorted(s.candidates, key=lambda c: (-(c.row.recall or 0), -_nab(c),
                                                        c.fa_per_day, c.index))
            for c in order:
                r = c.row
                name = f"**{c.label}** (chosen)" if c is s.chosen else c.label
                L.append(f"| {name} | {r.triggers} | {r.false_alarms} | {_fmt(r.false_alarms_per_day)} | "
                         f"{_fmt(r.precision)} | {_fmt(r.recall)} | {_fmt(r.nab_score, '.1f')} | "
                         f"{fmt_duration(r.ttd_median_s)} | {fmt_duration(r.ttd_p90_s)} |")
            L.append("")

    if result.labelled and result.labels:
        L.append("## Labelled windows\n")
        L.append("Each plot: one panel per detector of the window's kind, with its chosen setting. "
                 "The signal is read from the detector's own state after every event of a replay "
                 "(one value per evaluation); where a detector keeps no such signal (e.g. the "
                 "point detector `wrong_entity_action`), the panel shows events per minute in the "
                 "labelled segment with the triggers and resolves instead, and says so. Red band: "
                 "the labelled window; orange: the matching slack before and grace after.\n")
        for wi, lab in enumerate(result.labels, 1):
            panels = []
            for s in result.sweeps:
                if s.timeline is None or s.kind != lab["kind"]:
                    continue
                for ser in s.timeline["series"]:
                    w = ser["window"]
                    if (w["start"] == parse_ts(lab["start"]) and w["end"] == parse_ts(lab["end"])
                            and w["segment"] == (lab.get("segment") or {})):
                        panels.append((s, ser))
                        break
            detected = []
            if result.combined is not None:
                d = result.combined.windows[wi - 1]["detected_by"]
                detected = [f"{k} after {fmt_duration(v['ttd_s'])}" for k, v in d.items()]
            seg = ", ".join(f"{k}={v}" for k, v in (lab.get("segment") or {}).items())
            L.append(f"### Window {wi}: {lab['kind']} — {seg}\n")
            L.append(f"{lab['start']} to {lab['end']}. {lab.get('note', '')}  ")
            L.append(f"Detected by: {', '.join(detected) if detected else '**nobody**'}\n")
            if plots and panels:
                png = path.parent / f"{stem}-window-{wi:02d}-{_safe(lab['kind'])}.png"
                plot_window(wi, lab, panels, png, result.slack_before_s, result.slack_after_s)
                pngs.append(png)
                L.append(f"![window {wi}]({png.name})\n")
                for s, ser in panels:
                    if not ser["signal"]:
                        L.append(f"- {s.name}: no per-evaluation signal ({ser['unavailable']}); "
                                 "the panel shows the event rate, triggers and resolves.")
                L.append("")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")
    return pngs


def summary_text(result: TuneResult) -> str:
    """What the terminal shows after a sweep."""
    out = []
    if result.labelled:
        w = max([len(s.name) for s in result.sweeps] + [8])
        out.append(f"{'detector':<{w}}  {'settings':>8}  {'recall':>6}  {'FA/day':>6}  {'NAB':>6}  chosen")
        for s in result.sweeps:
            c = s.chosen
            r = c.row if c else None
            flag = "" if s.within_budget else "   <-- OVER BUDGET"
            out.append(f"{s.name:<{w}}  {len(s.candidates):>8}  {_fmt(r.recall if r else None):>6}  "
                       f"{_fmt(c.fa_per_day if c else None):>6}  "
                       f"{_fmt(r.nab_score if r else None, '.1f'):>6}  "
                       f"{c.label if c else '-'}{flag}")
        total = sum(s.chosen.fa_per_day for s in result.sweeps if s.chosen)
        out.append(f"combined: {total:.2f} false alarms/day (budget {result.budget:g} per detector)")
        if result.combined is not None:
            out.append("")
            out.append(format_table(result.combined))
    else:
        out.append("alert volume per day of each candidate setting:")
        for s in result.sweeps:
            out.append(f"  {s.name} ({s.type})")
            for c in s.candidates:
                mark = "  <- chosen" if c is s.chosen else ""
                out.append(f"    {_fmt(c.alerts_per_day):>8}/day  {c.triggers:>5} alerts  {c.label}{mark}")
    for wmsg in result.warnings():
        out.append(f"WARNING: {wmsg}")
    return "\n".join(out)


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
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs and the timeline replays")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from semwatch.settings import load_settings

    config_dir = args.config or str(load_settings().config_dir)
    config = load_config(config_dir)
    labels = None
    try:
        if args.labels:
            labels = load_labels(args.labels)
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
                      rejected=len(rejected))
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
