"""Acceptance experiment for ``semwatch tune``: tune on one simulated stretch, test on another.

1. Generate ``--duration`` (2 days) of labelled traffic with seed A and with seed B (JSON Lines).
2. Tune the whole config on A under a budget of ``--budget`` false alarms per day per detector
   (the same code path as ``semwatch tune``: parse once, sweep, choose, write and verify the tuned
   config directory and the report with its plots).
3. Replay the default config and the tuned config on B through the real engine and evaluate both.

Prints the evaluate table for A (tuned config on its tuning data) and for B (tuned config on the
held-out data), recall and false alarms per day on B, and the replay speed of the default config on B.
Progress bars go to stderr; stdout is the clean result.

    .venv/bin/python bench/tune_holdout.py                       # seeds 1 -> 2, 2 days, budget 1/day
    .venv/bin/python bench/tune_holdout.py --seed-a 3 --seed-b 4 --duration 1d --workdir /tmp/holdout
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semwatch.config import load_config  # noqa: E402
from semwatch.contract import is_optional  # noqa: E402
from semwatch.offline.evaluate import detector_kinds, evaluate, format_table  # noqa: E402
from semwatch.offline.replay import replay_events  # noqa: E402
from semwatch.offline.tune import load_events, tune, write_report, write_tuned_config  # noqa: E402
from semwatch.simulator.generate import generate, parse_duration, parse_time  # noqa: E402


def write_dataset(seed: int, start: float, duration: float, rate: float,
                  workdir: Path) -> tuple[Path, Path, list]:
    """Generate (or reuse, when a previous run left it in ``workdir``) one labelled data set."""
    stem = f"seed{seed}-{int(start)}-{int(duration)}s-{rate:g}eps"
    ev_path = workdir / f"events-{stem}.jsonl"
    lab_path = workdir / f"labels-{stem}.jsonl"
    if ev_path.exists() and lab_path.exists():
        return ev_path, lab_path, [json.loads(line) for line in lab_path.read_text().splitlines() if line]
    events, labels = generate(seed, start, duration, rate=rate)
    with open(ev_path, "w", encoding="utf-8") as fh:
        buf = []
        for ev in events:
            buf.append(json.dumps(ev, separators=(",", ":")))
            if len(buf) >= 5000:
                fh.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            fh.write("\n".join(buf) + "\n")
    with open(lab_path, "w", encoding="utf-8") as fh:  # written last: its presence marks completion
        for lab in labels:
            fh.write(json.dumps(lab) + "\n")
    return ev_path, lab_path, labels


def headline(report, days: float) -> str:
    r = report.row("all")
    fa = r.false_alarms
    precision = "-" if r.precision is None else f"{r.precision:.2f}"
    return (f"recall {r.recall:.2f} ({r.detected}/{r.windows} windows), false alarms {fa / days:.2f}/day "
            f"({fa} in {days:.2f} days), precision {precision}, NAB {r.nab_score:.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed-a", type=int, default=1, help="seed of the tuning data (default 1)")
    ap.add_argument("--seed-b", type=int, default=2, help="seed of the held-out data (default 2)")
    ap.add_argument("--start", default="2026-01-05T00:00:00Z", help="simulated start (a Monday)")
    ap.add_argument("--duration", default="2d", help="simulated span of each data set (default 2d)")
    ap.add_argument("--rate", type=float, default=3.0, help="mean weekday events/s (default 3)")
    ap.add_argument("--budget", type=float, default=1.0, help="false alarms per day per detector (default 1)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--config", default=str(ROOT / "config"))
    ap.add_argument("--workdir", default=None,
                    help="keep data, tuned config and report here (data sets found there are reused)")
    args = ap.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="semwatch-holdout-"))
    workdir.mkdir(parents=True, exist_ok=True)
    start, duration = parse_time(args.start), parse_duration(args.duration)
    # A frozen copy: edits to the source config during a long run must not change the experiment.
    source = workdir / "source-config"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(args.config, source)
    config = load_config(source)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    t = time.perf_counter()
    a_events, a_labels_path, a_labels = write_dataset(args.seed_a, start, duration, args.rate, workdir)
    b_events, _, b_labels = write_dataset(args.seed_b, start, duration, args.rate, workdir)
    log(f"data sets ready in {time.perf_counter() - t:.0f} s in {workdir}")

    # -- tune on A ------------------------------------------------------------------------------
    t = time.perf_counter()
    events, rejected = load_events(a_events)
    log(f"A: {len(events)} events parsed in {time.perf_counter() - t:.0f} s")
    result = tune(events, config, a_labels, budget=args.budget, jobs=args.jobs, rejected=len(rejected))
    n_a = len(events)
    del events
    gc.collect()
    tuned_dir = workdir / "tuned-config"
    shutil.rmtree(tuned_dir, ignore_errors=True)
    write_tuned_config(source, tuned_dir, result.chosen_params(),
                       header=f"# Tuned by bench/tune_holdout.py on seed {args.seed_a}, budget "
                              f"{args.budget:g} false alarms/day per detector.\n")
    report_path = workdir / "tune" / "report.md"
    pngs = write_report(result, report_path, events_path=str(a_events), config_dir=str(source),
                        out_config=tuned_dir)
    tuned = load_config(tuned_dir)

    # -- test on B ------------------------------------------------------------------------------
    t = time.perf_counter()
    events, rejected = load_events(b_events)
    parse_s = time.perf_counter() - t
    n_b = len(events)
    days_b = (events[-1].ts - events[0].ts) / 86400.0
    t = time.perf_counter()
    default_run = replay_events(events, config)  # fresh events: includes refusal classification
    default_s = time.perf_counter() - t
    tuned_run = replay_events(events, tuned)  # same objects, already enriched (identical results)
    del events
    kw = dict(days=days_b, days_from="event span of the recording", detectors=detector_kinds(tuned))
    default_b = evaluate(default_run.incidents, b_labels, **kw)
    tuned_b = evaluate(tuned_run.incidents, b_labels, **kw)

    # -- results --------------------------------------------------------------------------------
    changed = [f"{s.name}: {s.chosen.label}" for s in result.sweeps if s.chosen and not s.chosen.configured]
    print(f"semwatch tune holdout: tune on seed {args.seed_a}, test on seed {args.seed_b}; "
          f"{args.duration} each at {args.rate:g} events/s; "
          f"budget {args.budget:g} false alarm/day per detector")
    print(f"tuning: {n_a} events, {sum(1 for lab in a_labels if not is_optional(lab))} labelled windows, "
          f"{sum(len(s.candidates) for s in result.sweeps)} replays "
          f"in {result.seconds.get('sweep', 0):.0f} s "
          f"on {result.jobs} processes")
    print("changed: " + ("; ".join(changed) if changed else "nothing (the configured settings won)"))
    for w in result.warnings():
        print(f"WARNING: {w}")
    print()
    print(f"== A (seed {args.seed_a}): tuned config on its tuning data ==")
    print(format_table(result.combined))
    print()
    print(f"== B (seed {args.seed_b}): tuned config on held-out data ==")
    print(format_table(tuned_b))
    print()
    print(f"A, tuned:   {headline(result.combined, result.days)}")
    print(f"B, tuned:   {headline(tuned_b, days_b)}")
    print(f"B, default: {headline(default_b, days_b)}")
    print(f"replay speed, default config on B: {n_b} events in {default_s:.1f} s = "
          f"{n_b / default_s:,.0f} events/s (parsing: {n_b / parse_s:,.0f} events/s)")
    print(f"report: {report_path} ({len(pngs)} plots); tuned config: {tuned_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
