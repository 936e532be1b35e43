"""Refusal spikes on a 0/1 stream: semwatch's two-CUSUM share test against River's drift detectors.

    .venv/bin/python bench/bench_drift.py            # full run, ~4 min on one core (measured 225 s)
    .venv/bin/python bench/bench_drift.py --quick    # ~1/10 of the seeds, a smoke run (~30 s)

What is measured. Each event is one request: refused (1) or not (0), Bernoulli at rate p, arrivals
Poisson at ``rate`` events per minute; all times are in minutes. Three traffic levels:

    quiet   1 event/min   p0 = 0.02  -> p = 0.40
    3/min   3 events/min  p0 = 0.015 -> p = 0.12
    busy   60 events/min  p0 = 0.02  -> p = 0.30

- **Delay**: 3 days at p0, then the rise; the time from the rise to the first detection at or
  after it (median, p90, share detected within 60 min). A detection before the rise is a false
  alarm (the detector resets and goes on). Undetected by the horizon (24 h / 12 h / 2 h) counts as
  never (">24h" in the table).
- **False alarms per day**: streams with no rise for 30 simulated days; every detection, in either
  direction, is a false alarm. Also shown: the false alarms per day in the 3-day pre-rise stretches
  of the delay runs (the same null traffic, but every stretch starts cold, so warm-up effects weigh
  more there).

The contenders, each fed the same streams (common random numbers):

- ``two-CUSUM``: the share test of ``semwatch/engine/share.py``, rewritten here from its module
  docstring (only ``share_threshold`` is imported, for h): a baseline ``p0`` from decayed counts
  (half-life 6 h) shrunk towards 2 % worth 100 events, learnt only while both CUSUMs are at zero;
  two CUSUMs of the log-likelihood ratio of "p1 = max(p0 + 0.10, 2·p0)" and "three times as far above
  p0" against p0; a detection when either reaches
  ``h = max(ln(1/alpha), ln(events/day × 90)) + ln 2`` (alpha = 1e-5) with at least 4 hits since
  the rise began at a material rate without the first hit. After a detection both CUSUMs restart
  from zero and what they had pending is dropped (the product instead holds an incident open until
  it resolves; for counting detections the two are the same). ``min_runs`` is moot here: every
  simulated event is its own conversation. The false-refusal detector's sequential test is the
  same statistic divided by the over-dispersion, which is 1 for these Bernoulli streams.
- ``two-CUSUM, no rate gate``: a diagnostic, not a product setting: the same test without the last
  condition (the share since the rise began, without its first hit, at least p0 + 0.10 and 2·p0).
  It shows what that gate costs when a rise sits just above the material line, as 3/min's 12 % does
  (p0 + 0.10 = 11.5 %), and what it saves in false alarms.
- River's detectors for a 0/1 stream, installed version: ``drift.binary.DDM``, ``EDDM``,
  ``HDDMA`` and ``HDDMW`` (River spells them without the underscore), ``drift.ADWIN`` and
  ``drift.PageHinkley``, each with its default parameters and with one more sensitive setting.
  ``drift_detected`` is read after every ``update(x)``; River resets a detector on its next update.
  DDM, EDDM and the HDDMs (one-sided by default) only look for a rise of the error rate; ADWIN and
  PageHinkley (``mode="both"``) also for a fall, which is a false alarm here all the same.

Cost, and what is subsampled to stay within a few minutes: River detectors are per-event Python
(HDDMA/HDDMW ~5 µs an event each), so a busy route's 3 days are 259,200 events per stream and 30 days
2.6 million. The run therefore:

- quiet: 200 independent delay streams; 20 null streams of 30 days (as asked);
- 3/min: 100 independent 3-day pre-rise streams, each forked into 2 independent rises (200
  delays); 10 null streams of 30 days;
- busy: 8 independent 3-day pre-rise streams, each forked into 25 independent rises (200 delays,
  but only 8 independent histories before the rise); 1 null stream of 30 days.

A fork is a deep copy of every detector's state at the rise, continued on its own post-rise
draws. The subsampling is printed with the table. ``--seed`` changes every draw; the run is
deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from river import drift  # noqa: E402
from river.drift import binary  # noqa: E402

from semwatch.engine.share import share_threshold  # noqa: E402

DAY = 1440.0  # minutes


# -- semwatch's share test, rewritten from the docstring of semwatch/engine/share.py ---------------
class TwoCusum:
    """Two CUSUMs of a Bernoulli share against a learnt baseline (see the module docstring)."""

    def __init__(self, events_per_day: float, min_increase: float = 0.10, min_ratio: float = 2.0,
                 alpha: float = 1e-5, false_alarm_days: float = 90.0, prior_rate: float = 0.02,
                 prior_strength: float = 100.0, min_baseline_n: float = 200.0,
                 half_life_min: float = 360.0, min_hits: int = 4, material_gate: bool = True):
        self.h = share_threshold(events_per_day, false_alarm_days, alpha)
        self.inc, self.ratio, self.min_hits, self.min_base = min_increase, min_ratio, min_hits, min_baseline_n
        self.prior_k, self.prior_n, self.hl = prior_strength * prior_rate, prior_strength, half_life_min
        self.gate = material_gate
        self.base_n = self.base_k = 0.0
        self.base_t = None
        self.s1 = self.s2 = 0.0
        self.n = self.k = 0  # events and hits since the rise began (learnt later, or dropped)
        self.drift_detected = False

    def update(self, x: int, t: float) -> None:
        self.drift_detected = False
        if self.base_t is not None and t > self.base_t:
            f = 0.5 ** ((t - self.base_t) / self.hl)
            self.base_n *= f
            self.base_k *= f
        self.base_t = t
        if self.base_n < self.min_base:  # first learn
            self.base_n += 1.0
            self.base_k += x
            return
        p0 = min(max((self.base_k + self.prior_k) / (self.base_n + self.prior_n), 1e-6), 0.98)
        material = min(max(p0 + self.inc, self.ratio * p0), 0.99)
        large = min(p0 + 3.0 * (material - p0), 0.995)
        if x:
            self.s1 += math.log(material / p0)
            self.s2 += math.log(large / p0)
        else:
            self.s1 += math.log((1.0 - material) / (1.0 - p0))
            self.s2 += math.log((1.0 - large) / (1.0 - p0))
        h = self.h
        self.s1 = min(max(self.s1, 0.0), 2.0 * h)
        self.s2 = min(max(self.s2, 0.0), 2.0 * h)
        if self.s1 <= 0.0 and self.s2 <= 0.0:  # no rise after all: learn what waited, and this
            self.base_n += self.n + 1
            self.base_k += self.k + x
            self.n = self.k = 0
            return
        self.n += 1
        self.k += x
        if max(self.s1, self.s2) >= h and self.k >= self.min_hits:
            honest = (self.k - 1) / (self.n - 1) if self.n > 1 else 0.0  # without the first hit
            if not self.gate or (honest - p0 >= self.inc and honest >= self.ratio * p0):
                self.drift_detected = True
                self.s1 = self.s2 = 0.0
                self.n = self.k = 0  # flagged: never learnt


# -- contenders ---------------------------------------------------------------------------------
def contenders(events_per_day: float) -> list[tuple[str, object]]:
    """(label, factory) for every detector; the label says which setting is not the default."""
    return [
        ("two-CUSUM (semwatch)", lambda: TwoCusum(events_per_day)),
        ("two-CUSUM, no rate gate", lambda: TwoCusum(events_per_day, material_gate=False)),
        ("DDM", binary.DDM),
        ("DDM drift_threshold=2", lambda: binary.DDM(warning_threshold=1.5, drift_threshold=2.0)),
        ("EDDM", binary.EDDM),
        ("EDDM alpha=.98 beta=.95", lambda: binary.EDDM(alpha=0.98, beta=0.95)),
        ("HDDMA", binary.HDDMA),
        ("HDDMA drift_conf=.01", lambda: binary.HDDMA(drift_confidence=0.01, warning_confidence=0.05)),
        ("HDDMW", binary.HDDMW),
        ("HDDMW drift_conf=.01", lambda: binary.HDDMW(drift_confidence=0.01, warning_confidence=0.05)),
        ("ADWIN", drift.ADWIN),
        ("ADWIN clock=1", lambda: drift.ADWIN(clock=1)),
        ("PageHinkley", drift.PageHinkley),
        ("PageHinkley up thr=10", lambda: drift.PageHinkley(threshold=10.0, mode="up")),
    ]


def alarms(det, xs: list, ts: list, first_only: bool) -> list[int]:
    """Indices of the events after which ``det`` reported a drift (only the first if asked)."""
    out = []
    if isinstance(det, TwoCusum):
        up = det.update
        for i, (x, t) in enumerate(zip(xs, ts)):
            up(x, t)
            if det.drift_detected:
                out.append(i)
                if first_only:
                    break
    else:
        up = det.update
        for i, x in enumerate(xs):
            up(x)
            if det.drift_detected:
                out.append(i)
                if first_only:
                    break
    return out


def draw(rng: np.random.Generator, rate: float, p: float, t0: float, t1: float) -> tuple[list, list]:
    """Poisson arrivals at ``rate``/min in [t0, t1), each refused with probability p."""
    n = int(rng.poisson(rate * (t1 - t0)))
    ts = np.sort(rng.uniform(t0, t1, n))
    xs = (rng.random(n) < p).astype(np.int8)
    return xs.tolist(), ts.tolist()


# -- scenarios ----------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    rate: float  # events per minute
    p0: float
    p1: float
    histories: int  # independent 3-day pre-rise streams ...
    forks: int  # ... each continued into this many independent rises
    horizon_min: float  # look this long after the rise
    null_seeds: int
    null_days: float = 30.0
    pre_days: float = 3.0


@dataclass
class Tally:
    delays: list = field(default_factory=list)  # minutes, math.inf if not detected by the horizon
    pre_alarms: int = 0
    pre_days: float = 0.0
    null_alarms: int = 0
    null_days: float = 0.0


SCENARIOS = [
    Scenario("quiet 1/min .02->.40", 1.0, 0.02, 0.40, histories=200, forks=1, horizon_min=DAY, null_seeds=20),
    Scenario("3/min .015->.12", 3.0, 0.015, 0.12, histories=100, forks=2, horizon_min=DAY / 2, null_seeds=10),
    Scenario("busy 60/min .02->.30", 60.0, 0.02, 0.30, histories=8, forks=25, horizon_min=120.0, null_seeds=1),
]


def run(sc: Scenario, sid: int, seed: int, log) -> dict[str, Tally]:
    makers = contenders(sc.rate * DAY)
    tally = {name: Tally() for name, _ in makers}
    t_rise = sc.pre_days * DAY
    for i in range(sc.histories):
        pre = draw(np.random.default_rng([seed, sid, 1, i]), sc.rate, sc.p0, 0.0, t_rise)
        posts = [draw(np.random.default_rng([seed, sid, 2, i, j]), sc.rate, sc.p1, t_rise,
                      t_rise + sc.horizon_min) for j in range(sc.forks)]
        for name, make in makers:
            det, tl = make(), tally[name]
            tl.pre_alarms += len(alarms(det, pre[0], pre[1], first_only=False))
            tl.pre_days += sc.pre_days
            for j, (xs, ts) in enumerate(posts):
                d = det if j == sc.forks - 1 else copy.deepcopy(det)
                hit = alarms(d, xs, ts, first_only=True)
                tl.delays.append(ts[hit[0]] - t_rise if hit else math.inf)
    log(f"  {sc.name}: delays done")
    for s in range(sc.null_seeds):
        xs, ts = draw(np.random.default_rng([seed, sid, 3, s]), sc.rate, sc.p0, 0.0, sc.null_days * DAY)
        for name, make in makers:
            tally[name].null_alarms += len(alarms(make(), xs, ts, first_only=False))
            tally[name].null_days += sc.null_days
    log(f"  {sc.name}: nulls done")
    return tally


# -- report -------------------------------------------------------------------------------------
def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile; undetected runs (inf) sort last."""
    v = sorted(values)
    return v[max(math.ceil(q * len(v)) - 1, 0)]


def minutes(v: float, horizon: float) -> str:
    if math.isinf(v):
        return f">{horizon / 60:.0f}h"
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def per_day(count: int, days: float) -> str:
    if not days:
        return "-"
    r = count / days
    return "0" if r == 0 else (f"{r:.3f}" if r < 1 else f"{r:.1f}")


def table(results: list[tuple[Scenario, dict[str, Tally]]]) -> str:
    names = list(results[0][1])
    w = max(len(n) for n in names) + 2
    cols = ("med", "p90", "<=60m", "FA/d30", "FA/dpre")
    cw = (6, 6, 6, 7, 8)
    group = sum(cw) + len(cw)
    head1 = " " * w + "".join(f"| {sc.name:<{group - 1}}" for sc, _ in results)
    head2 = f"{'detector':<{w}}" + "".join("|" + "".join(f"{c:>{x}} " for c, x in zip(cols, cw))
                                           for _ in results)
    lines = [head1, head2, "-" * len(head2)]
    for name in names:
        row = f"{name:<{w}}"
        for sc, tally in results:
            tl = tally[name]
            cells = (minutes(quantile(tl.delays, 0.5), sc.horizon_min),
                     minutes(quantile(tl.delays, 0.9), sc.horizon_min),
                     f"{sum(d <= 60.0 for d in tl.delays) / len(tl.delays):.0%}",
                     per_day(tl.null_alarms, tl.null_days), per_day(tl.pre_alarms, tl.pre_days))
            row += "|" + "".join(f"{c:>{x}} " for c, x in zip(cells, cw))
        lines.append(row)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--quick", action="store_true", help="about a tenth of the seeds (smoke run)")
    args = ap.parse_args(argv)
    scenarios = SCENARIOS
    if args.quick:
        scenarios = [Scenario(sc.name, sc.rate, sc.p0, sc.p1, max(sc.histories // 10, 1), sc.forks,
                              sc.horizon_min, max(sc.null_seeds // 10, 1), null_days=sc.null_days / 3)
                     for sc in SCENARIOS]

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s]{msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    results = [(sc, run(sc, sid, args.seed, log)) for sid, sc in enumerate(scenarios)]
    elapsed = time.perf_counter() - t0

    import river
    print(f"Refusal-spike detection on simulated 0/1 streams (river {river.__version__}, seed {args.seed})")
    print("med/p90: minutes from the rise to the first detection at or after it; <=60m: share detected "
          "within 60 min;")
    print("FA/d30: false alarms per day on the null streams; FA/dpre: per day in the 3-day pre-rise "
          "stretches.")
    print("h of the two-CUSUM: " + ", ".join(
        f"{sc.name.split()[0]} {share_threshold(sc.rate * DAY, 90.0, 1e-5):.2f}" for sc in scenarios))
    print()
    print(table(results))
    print()
    print("Seeds (subsampled to keep the run short):")
    for sc, tally in results:
        n = len(next(iter(tally.values())).delays)
        indep = ("independent" if sc.forks == 1 else
                 f"{sc.histories} independent pre-rise histories x {sc.forks} forked rises")
        print(f"  {sc.name}: {n} delays ({indep}), {sc.pre_days:g} days before the rise, horizon "
              f"{sc.horizon_min / 60:g} h; nulls: {sc.null_seeds} stream(s) x {sc.null_days:g} days")
    print(f"Total run time {elapsed:.0f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
