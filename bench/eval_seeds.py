"""Detection quality over many seeds: generate, replay with the shipped config, evaluate.

    .venv/bin/python bench/eval_seeds.py                      # seeds 1-6, 2 simulated days each
    .venv/bin/python bench/eval_seeds.py --seeds 7 8 9 10 11 12 --workdir /tmp/eval-seeds
    .venv/bin/python bench/eval_seeds.py --strict-kinds       # cross-kind triggers are false alarms

Each seed runs the real command line (``semwatch generate``, ``replay``, ``evaluate``), two seeds
at a time. Prints, per seed, recall, false alarms (each false alarm's summary) and pages, then per
kind the windows detected and the time to detect from the labelled start: median, how many within
2, 10 and 15 minutes, slowest; the refusal spikes once more by traffic level (busy routes, the quiet
routes at ~1 and ~3 requests a minute, whose targets are 15 and 10 minutes), each quiet-route
window with its time to detect; and the pages over all seeds (``report["pages"]`` of
``semwatch evaluate --json``). Generated files are kept in ``--workdir`` and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEMWATCH = [sys.executable, "-m", "semwatch.cli"]
START, END = "2026-01-05T00:00:00Z", "2026-01-07T00:00:00Z"
#: the simulator's quiet support-bot routes: label and time-to-detect target (the issue's, per traffic level)
QUIET = {"warranty": ("~1/min, 40 %", 900.0), "accessibility": ("~3/min, 12 %", 600.0)}


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
    refusal_levels: dict[str, list] = {}  # busy routes / each quiet route: time to detect or None
    quiet_windows: list[tuple] = []
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
        print(f"    pages        {pages_line(rep['pages'])}")
        for w in rep["windows"]:
            if not w["optional"]:
                first = min(w["detected_by"].items(), key=lambda d: d[1]["ttd_s"], default=None)
                value = first[1]["ttd_s"] if first else None
                ttd.setdefault(w["kind"], []).append(value)
                if w["kind"] == "false_refusal_spike":
                    route = w["segment"].get("route")
                    refusal_levels.setdefault(route if route in QUIET else "busy routes", []).append(value)
                    if route in QUIET:
                        quiet_windows.append((seed, w, first))
    days = 2 * len(args.seeds)
    print(f"\nall: {detected}/{windows} windows, {false_alarms} false alarms in {days} simulated days"
          + (" (strict kinds)" if args.strict_kinds else ""))
    print(f"{'kind':<32} {'detected':>9} {'median':>8} {'<= 2 min':>9} {'<= 10 min':>10} {'<= 15 min':>10} "
          f"{'slowest':>8}")
    for kind, values in sorted(ttd.items()):
        print(ttd_row(kind, values))
    print("false_refusal_spike by traffic level (issue targets: quiet ~1/min within 15 min, ~3/min within 10 min,"
          " busy routes as fast as before):")
    for level in ["busy routes", *QUIET]:
        if level in refusal_levels:
            name = f"  {level} ({QUIET[level][0]})" if level in QUIET else f"  {level}"
            print(ttd_row(name, refusal_levels[level]))
    print("\nquiet-route refusal windows:")
    for seed, w, first in quiet_windows:
        label, target = QUIET[w["segment"]["route"]]
        found = (f"{first[1]['ttd_s']:>6.0f} s  {'in target' if first[1]['ttd_s'] <= target else 'LATE':<9}  "
                 f"{first[0]}" if first else "MISSED")
        print(f"  seed {seed:<3} {w['start'][:16]}  {w['segment']['route']:<13} {w['segment']['prompt_version']:<4} "
              f"({label}, target {target / 60:.0f} min)  {found}")
    print_pages([rep["pages"] for rep in reports], days)


def ttd_row(name: str, values: list) -> str:
    """One row of the time-to-detect table: found/windows, median, within 2/10/15 min, slowest."""
    found = sorted(v for v in values if v is not None)
    median = (found[(len(found) - 1) // 2] + found[len(found) // 2]) / 2 if found else None

    def within(limit_s: float) -> str:
        return f"{sum(1 for v in found if v <= limit_s)}/{len(values)}"

    return (f"{name:<32} {len(found):>4}/{len(values):<4} {'-' if median is None else f'{median:.0f} s':>8} "
            f"{within(120):>9} {within(600):>10} {within(900):>10} {'-' if not found else f'{found[-1]:.0f} s':>8}")


def _s(x) -> str:
    return "-" if x is None else f"{x:.0f} s"


def pages_line(pg: dict) -> str:
    per = "-" if pg["pages_per_incident"] is None else f"{pg['pages_per_incident']:.2f}"
    return (f"{pg['pages']} problems paged; {per} per incident paged (max {pg['max_pages_per_incident']}), "
            f"{pg['incidents_paged']}/{pg['incidents']} incidents paged; {pg['false_pages']} false pages; "
            f"first page after {_s(pg['time_to_first_page_median_s'])} median, {_s(pg['time_to_first_page_max_s'])} max")


def print_pages(pages: list[dict], days: int) -> None:
    """The seeds' pages summed; the time to first page as the median of the seeds' medians (the reports
    give no per-incident times) and the largest of their maxima."""
    paged = sum(p["incidents_paged"] for p in pages)
    per = sum((p["pages_per_incident"] or 0.0) * p["incidents_paged"] for p in pages) / paged if paged else None
    false_pages = sum(p["false_pages"] for p in pages)
    medians = [p["time_to_first_page_median_s"] for p in pages if p["time_to_first_page_median_s"] is not None]
    maxima = [p["time_to_first_page_max_s"] for p in pages if p["time_to_first_page_max_s"] is not None]
    print(f"\npages over {len(pages)} seeds ({days} simulated days):")
    print(f"  problems paged               {sum(p['pages'] for p in pages)}")
    print(f"  incidents paged              {paged}/{sum(p['incidents'] for p in pages)}")
    print(f"  pages per incident paged     mean {'-' if per is None else f'{per:.2f}'}, "
          f"max {max((p['max_pages_per_incident'] for p in pages), default=0)}")
    print(f"  false pages                  {false_pages} ({false_pages / days:.2f}/day)")
    print(f"  time to first page           median of the seeds' medians "
          f"{_s(statistics.median(medians) if medians else None)}, max {_s(max(maxima, default=None))}")


if __name__ == "__main__":
    main()
