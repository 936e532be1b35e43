"""How soon *could* a spike have been told apart? Time to detect next to the data's own floor.

Reads what ``bench/eval_seeds.py`` left in its work directory (events, labels, evaluate reports) and
prints, per false-refusal-spike and runaway-loop window, the measured time to detect beside the
earliest moment the evidence existed at all:

- refusal spike: the segment's ordinary requests per minute, and when the labelled segment had
  seen its 3rd and 4th refused ordinary request from 3 or more conversations (the refusal verdict
  is the same classifier the engine uses). No test at any false-alarm budget can call a rise from
  fewer refusals than that; ``false-refusal-spike`` needs 4 (``min_refused``) and p < 1e-5.
- runaway loop: the loop's pace (seconds per step), its steps and tokens when detected, and when it
  first went beyond *every* other run of its segment in the recording on steps, on exact repeats
  of its own tool calls, or on cumulative tokens. Before that moment the loop looks like some
  normal run of that recording, so a detector with no false alarms on it cannot flag it earlier.

    .venv/bin/python bench/eval_seeds.py --seeds 1 2 3 4 5 6 --workdir /tmp/es
    .venv/bin/python bench/ttd_floor.py --workdir /tmp/es --seeds 1 2 3 4 5 6
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semwatch.contract import parse_ts  # noqa: E402
from semwatch.enrich.refusal_model import is_refusal  # noqa: E402

HORIZON_S = 1800.0  # look this far past a window's start


def _lines_with(path: Path, needles: list[str]):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if all(n in line for n in needles):
                yield json.loads(line)


def _matches(ev: dict, segment: dict) -> bool:
    return all(ev.get(k) == v for k, v in segment.items())


def refusal_floor(events: Path, window: dict) -> dict:
    seg, t0 = window["segment"], parse_ts(window["start"])
    needles = [f'"{k}":{json.dumps(v)}' for k, v in seg.items()]
    n, refused_at, convs = 0, [], set()
    floor3 = floor4 = None
    for ev in _lines_with(events, needles):
        ts = parse_ts(ev["ts"])
        if not _matches(ev, seg) or not t0 <= ts < t0 + HORIZON_S or ev.get("request_flagged"):
            continue
        verdict = ev.get("refusal")
        if verdict is None and ev.get("response_text"):
            verdict = is_refusal(ev["response_text"])
        if verdict is None:
            continue
        if ts < t0 + 600:
            n += 1
        if verdict:
            refused_at.append(ts - t0)
            convs.add(ev.get("conversation_id") or ev["run_id"])
            if len(convs) >= 3 and floor3 is None:
                floor3 = ts - t0
            if len(convs) >= 3 and len(refused_at) >= 4 and floor4 is None:
                floor4 = ts - t0
    return {"per_min": n / 10.0, "floor3": floor3, "floor4": floor4}


def _repeats(calls: dict, event: dict) -> int:
    grown = 0
    for tc in event.get("tool_calls") or ():
        key = zlib.crc32(f"{tc.get('name')}\x1f{tc.get('arguments')!r}".encode())
        grown += key in calls
        calls[key] = calls.get(key, 0) + 1
    return grown


def loop_floor(events: Path, window: dict, detected_s: float | None) -> dict:
    seg, t0, loop_run = window["segment"], parse_ts(window["start"]), window["run_id"]
    needles = [f'"{k}":{json.dumps(v)}' for k, v in seg.items()]
    runs: dict[str, list] = {}  # run_id -> [steps, tokens, repeats, calls]
    loop_steps: list[tuple[float, int, float, int]] = []  # (t - t0, steps, tokens, repeats)
    for ev in _lines_with(events, needles):
        if not _matches(ev, seg):
            continue
        r = runs.setdefault(ev["run_id"], [0, 0.0, 0, {}])
        r[0] += 1
        r[1] += (ev.get("input_tokens") or 0) + (ev.get("output_tokens") or 0)
        r[2] += _repeats(r[3], ev)
        if ev["run_id"] == loop_run:
            loop_steps.append((parse_ts(ev["ts"]) - t0, r[0], r[1], r[2]))
    others = [r for rid, r in runs.items() if rid != loop_run]
    max_steps = max((r[0] for r in others), default=0)
    max_tokens = max((r[1] for r in others), default=0.0)
    max_repeats = max((r[2] for r in others), default=0)
    floor = next((t for t, s, tok, rep in loop_steps
                  if s > max_steps or tok > max_tokens or rep > max_repeats), None)
    at = None
    if detected_s is not None:
        at = next(((s, tok) for t, s, tok, _ in loop_steps if t >= detected_s - 1e-3), loop_steps[-1][1:3])
    pace = loop_steps[-1][0] / max(1, len(loop_steps) - 1) if loop_steps else None
    return {"pace": pace, "floor": floor, "at": at, "max_steps": max_steps,
            "max_repeats": max_repeats, "max_tokens": max_tokens}


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    args = ap.parse_args()
    wd = Path(args.workdir)
    refusal_rows, loop_rows = [], []
    for seed in args.seeds:
        report = json.loads((wd / f"report-{seed}.json").read_text())
        events = wd / f"events-{seed}.jsonl"
        labels = {}
        for line in (wd / f"labels-{seed}.jsonl").read_text().splitlines():
            if line.strip():
                lb = json.loads(line)
                labels[(lb["kind"], round(parse_ts(lb["start"]), 3))] = lb
        for w in report["windows"]:
            if w["optional"] or w["kind"] not in ("false_refusal_spike", "token_spike"):
                continue
            times = [d["ttd_s"] for d in w["detected_by"].values()]
            ttd = min(times) if times else None
            label = labels[(w["kind"], round(parse_ts(w["start"]), 3))]
            if w["kind"] == "false_refusal_spike":
                refusal_rows.append((seed, w, ttd, refusal_floor(events, label)))
            else:
                loop_rows.append((seed, w, ttd, loop_floor(events, label, ttd)))

    print("false-refusal spikes: time to detect vs when the 3rd / 4th refusal (3+ conversations) arrived")
    print(f"{'seed':>4} {'segment':<44} {'req/min':>7} {'3rd':>6} {'4th':>6} {'ttd':>6} {'ttd-4th':>7}")
    for seed, w, ttd, f in refusal_rows:
        s = w["segment"]
        name = f"{s['app']}/{s['route']} {s.get('prompt_version', '')}"
        gap = None if ttd is None or f["floor4"] is None else ttd - f["floor4"]
        print(f"{seed:>4} {name:<44} {f['per_min']:>7.1f} {_s(f['floor3']):>6} {_s(f['floor4']):>6} "
              f"{_s(ttd):>6} {_s(gap):>7}")
    print("\nrunaway loops: time to detect vs when the loop first outgrew every other run of its segment")
    print(f"{'seed':>4} {'segment':<36} {'s/step':>6} {'beyond':>7} {'ttd':>6} {'steps':>5} {'tokens':>9}")
    for seed, w, ttd, f in loop_rows:
        s = w["segment"]
        name = f"{s['app']}/{s['route']}"
        steps, tokens = f["at"] if f["at"] else ("-", 0)
        print(f"{seed:>4} {name:<36} {f['pace'] or 0:>6.1f} {_s(f['floor']):>7} {_s(ttd):>6} "
              f"{steps:>5} {tokens:>9,.0f}")


if __name__ == "__main__":
    main()
