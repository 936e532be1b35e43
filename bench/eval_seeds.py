"""Detection quality over many seeds: generate, replay with the shipped config, evaluate.

    .venv/bin/python bench/eval_seeds.py                      # seeds 1-6, 2 simulated days each
    .venv/bin/python bench/eval_seeds.py --seeds 7 8 9 10 11 12 --workdir /tmp/eval-seeds
    .venv/bin/python bench/eval_seeds.py --strict-kinds       # cross-kind triggers are false alarms

Each seed runs the real command line (``semwatch generate``, ``replay``, ``evaluate``), two seeds
at a time. Prints, per seed, recall and false alarms (each false alarm's summary), then per kind the
windows detected and the time to detect from the labelled start: median, how many within two
minutes, slowest. Generated files are kept in ``--workdir`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEMWATCH = [sys.executable, "-m", "semwatch.cli"]
START, END = "2026-01-05T00:00:00Z", "2026-01-07T00:00:00Z"


def one_seed(seed: int, workdir: Path, strict: bool) -> dict:
    events, labels = workdir / f"events-{seed}.jsonl", workdir / f"labels-{seed}.jsonl"
    incidents, report = workdir / f"incidents-{seed}.jsonl", workdir / f"report-{seed}.json"
    run = dict(cwd=ROOT, check=True, capture_output=True)
    if not events.exists():
        subprocess.run(SEMWATCH + ["generate", "--seed", str(seed), "--duration", "2d", "--start", START,
                                   "--out", str(events), "--labels", str(labels)], **run)
    subprocess.run(SEMWATCH + ["replay", str(events), "--out", str(incidents),
                               "--config", str(ROOT / "config")], **run)
    subprocess.run(SEMWATCH + ["evaluate", "--incidents", str(incidents), "--labels", str(labels),
                               "--json", str(report), "--start", START, "--end", END]
                   + (["--strict-kinds"] if strict else []), **run)
    return json.loads(report.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "semwatch-eval-seeds"))
    ap.add_argument("--strict-kinds", action="store_true")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda s: one_seed(s, workdir, args.strict_kinds), args.seeds))

    ttd: dict[str, list] = {}
    windows = detected = false_alarms = 0
    for seed, rep in zip(args.seeds, reports):
        overall = next(r for r in rep["rows"] if r["scope"] == "all")
        windows += overall["windows"]
        detected += overall["detected"]
        false_alarms += overall["false_alarms"]
        print(f"seed {seed}: {overall['detected']}/{overall['windows']} windows, "
              f"{overall['false_alarms']} false alarms ({overall['false_alarms_per_day']:.2f}/day), "
              f"{overall['related']} related")
        for fa in rep["false_alarms"]:
            print(f"    false alarm  {fa['detector']} {fa['detected_at']}  {fa['summary'][:110]}")
        for w in rep["windows"]:
            if not w["optional"]:
                times = [d["ttd_s"] for d in w["detected_by"].values()]
                ttd.setdefault(w["kind"], []).append(min(times) if times else None)
    days = 2 * len(args.seeds)
    print(f"\nall: {detected}/{windows} windows, {false_alarms} false alarms in {days} simulated days"
          + (" (strict kinds)" if args.strict_kinds else ""))
    print(f"{'kind':<22} {'detected':>9} {'median':>8} {'<= 2 min':>9} {'slowest':>8}")
    for kind, values in sorted(ttd.items()):
        found = sorted(v for v in values if v is not None)
        median = (found[(len(found) - 1) // 2] + found[len(found) // 2]) / 2 if found else None
        fast = sum(1 for v in found if v <= 120)
        print(f"{kind:<22} {len(found):>4}/{len(values):<4} "
              f"{'-' if median is None else f'{median:.0f} s':>8} {f'{fast}/{len(values)}':>9} "
              f"{'-' if not found else f'{found[-1]:.0f} s':>8}")


if __name__ == "__main__":
    main()
