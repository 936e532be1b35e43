"""Throughput and accuracy of the refusal classifier (semwatch/enrich/refusal_patterns.py).

    .venv/bin/python bench/bench_refusal.py                      # labelled set, tune + holdout
    .venv/bin/python bench/bench_refusal.py --texts other.jsonl  # any JSONL with text/refusal
    .venv/bin/python bench/bench_refusal.py --threshold 0.6 --seconds 5

Throughput is single-threaded and reported per CPU second (``time.process_time``), so other
processes on a shared machine do not distort it; wall-clock throughput is printed too.
Accuracy is reported separately for the ``split == "tune"`` rows (the weights were tuned on
them) and the ``split == "holdout"`` rows (not looked at while tuning), with the misclassified
holdout texts listed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semwatch.enrich import refusal_patterns as rc  # noqa: E402

DEFAULT_DATA = ROOT / "tests" / "data" / "refusal_texts.jsonl"


def load(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if "text" not in row or "refusal" not in row:
                raise SystemExit(f"{path}:{n}: needs 'text' and 'refusal' fields")
            rows.append(row)
    return rows


def metrics(rows: list[dict], threshold: float) -> dict:
    tp = fp = fn = tn = 0
    wrong = []
    for r in rows:
        s = rc.score(r["text"])
        pred = s >= threshold
        gold = bool(r["refusal"])
        if pred and gold:
            tp += 1
        elif pred:
            fp += 1
            wrong.append(("FP", s, r))
        elif gold:
            fn += 1
            wrong.append(("FN", s, r))
        else:
            tn += 1
    p = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * rec / (p + rec) if p + rec else 0.0
    return {"n": len(rows), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": p, "recall": rec, "f1": f1, "wrong": wrong}


def throughput(texts: list[str], seconds: float) -> tuple[float, float]:
    """(texts per CPU second, texts per wall second) on one thread."""
    score = rc.score
    for t in texts:  # warm up
        score(t)
    n = 0
    c0, w0 = time.process_time(), time.perf_counter()
    while time.process_time() - c0 < seconds:
        for t in texts:
            score(t)
        n += len(texts)
    c1, w1 = time.process_time(), time.perf_counter()
    return n / (c1 - c0), n / (w1 - w0)


def fmt(name: str, m: dict) -> str:
    return (f"{name:<8} n={m['n']:<4} precision={m['precision']:.3f} recall={m['recall']:.3f} "
            f"F1={m['f1']:.3f}  (tp={m['tp']} fp={m['fp']} fn={m['fn']} tn={m['tn']})")


def show_wrong(m: dict, limit: int = 200) -> None:
    for kind, s, r in m["wrong"][:limit]:
        text = r["text"].replace("\n", " ")
        if len(text) > 160:
            text = text[:157] + "..."
        src = r.get("source", "")
        print(f"  {kind} score={s:.2f} [{src}] {text}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=Path, default=None,
                    help="JSONL with 'text' and 'refusal' fields (default: the labelled set)")
    ap.add_argument("--threshold", type=float, default=rc.DEFAULT_THRESHOLD)
    ap.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per throughput run")
    ap.add_argument("--no-speed", action="store_true", help="skip the throughput measurement")
    args = ap.parse_args(argv)

    path = args.texts or DEFAULT_DATA
    rows = load(path)
    print(f"data: {path} ({len(rows)} rows), threshold={args.threshold}")

    if not args.no_speed:
        texts = [r["text"] for r in rows]
        typical = [t for t in texts if 50 <= len(t) <= 400]
        if typical:
            cpu, wall = throughput(typical, args.seconds)
            mean = sum(map(len, typical)) / len(typical)
            print(f"throughput, 50-400 char texts (n={len(typical)}, mean {mean:.0f} chars): "
                  f"{cpu:,.0f} texts/CPU-s ({wall:,.0f} texts/wall-s)")
        cpu, wall = throughput(texts, args.seconds / 2)
        print(f"throughput, all texts (n={len(texts)}): {cpu:,.0f} texts/CPU-s "
              f"({wall:,.0f} texts/wall-s)")
        big = "I'm sorry, but " + "lorem ipsum dolor sit amet, " * 20000 + " I can't help."
        t0 = time.process_time()
        rc.score(big)
        print(f"one {len(big):,}-char text: {(time.process_time() - t0) * 1e3:.2f} ms")

    if args.texts is not None and not any("split" in r for r in rows):
        m = metrics(rows, args.threshold)
        print(fmt("all", m))
        print("misclassified:")
        show_wrong(m)
        return 0

    splits = {
        "tune": [r for r in rows if r.get("split", "tune") != "holdout"],
        "holdout": [r for r in rows if r.get("split") == "holdout"],
    }
    for name in ("tune", "holdout"):
        if splits[name]:
            print(fmt(name, metrics(splits[name], args.threshold)))
    print(fmt("all", metrics(rows, args.threshold)))
    if splits["holdout"]:
        m = metrics(splits["holdout"], args.threshold)
        print(f"misclassified holdout texts ({len(m['wrong'])}):")
        show_wrong(m)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
