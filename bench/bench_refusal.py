"""Refusal classifiers on held-out real data: old hand patterns vs the learned model.

    .venv/bin/python bench/bench_refusal.py             # the full protocol table (trains 8 models, ~4 CPU-min)
    .venv/bin/python bench/bench_refusal.py --quick     # shipped model only: project sets, sealed B, speed
    .venv/bin/python bench/bench_refusal.py --errors "GPTFuzz held out" --limit 40   # misclassified texts
    .venv/bin/python bench/bench_refusal.py --texts other.jsonl   # any JSONL with text + refusal

Protocol (docs/refusal-classifier.md): every figure in the "held out" rows comes from a model
whose training pool did not contain those rows (``scripts/train_refusal_model.py --run ...``),
and whose threshold was chosen out-of-fold inside that pool. The shipped model is trained on
everything allowed; its rows are marked "trained". JailbreakBench is never trained on and is
error analysis only (its labels are an LLM judge's "not jailbroken", not "declined").
``tests/data/refusal_texts_independent_b.jsonl`` is sealed: measured here, never trained or
tuned on, and its misclassified texts are never printed.

Throughput is single-threaded, per CPU second (``time.process_time``), on real responses of
50-2,000 characters, scored one at a time.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import refusal_patterns_v1 as rpat  # noqa: E402  (bench/: the retired hand-written patterns, for comparison)
import train_refusal_model as trainer  # noqa: E402

from semwatch.enrich import refusal_model as rmodel  # noqa: E402

SET_A = ROOT / "tests" / "data" / "refusal_texts_independent_a.jsonl"
SET_B = ROOT / "tests" / "data" / "refusal_texts_independent_b.jsonl"   # sealed
OLD_THRESHOLD = rpat.DEFAULT_THRESHOLD


def prf(rows: List[dict], scores: List[float], threshold: float) -> Tuple[float, float, int, int, int]:
    tp = fp = fn = 0
    for r, s in zip(rows, scores):
        pred = s >= threshold
        if pred and r["label"]:
            tp += 1
        elif pred:
            fp += 1
        elif r["label"]:
            fn += 1
    p = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    return p, rec, tp, fp, fn


class Slice:
    def __init__(self, name: str, run: str, select: Callable[[dict], bool], kind: str) -> None:
        self.name, self.run, self.select, self.kind = name, run, select, kind


def _src(source: str, **kw) -> Callable[[dict], bool]:
    return lambda r: r["source"] == source and all(r.get(k) == v for k, v in kw.items())


SLICES = [
    # leave one source out
    Slice("GPTFuzz held out", "no-gptfuzz", _src("gptfuzz"), "held out"),
    Slice("  GPTFuzz en", "no-gptfuzz", _src("gptfuzz", lang="en"), "held out"),
    Slice("  GPTFuzz zh", "no-gptfuzz", _src("gptfuzz", lang="zh"), "held out"),
    Slice("  GPTFuzz mixed", "no-gptfuzz", _src("gptfuzz", lang="mixed"), "held out"),
    Slice("  GPTFuzz 'evaluate' split", "no-gptfuzz", _src("gptfuzz", split="evaluate"), "held out"),
    Slice("  GPTFuzz, same, no set C", "no-gptfuzz-no-setC", _src("gptfuzz"), "ablation"),
    Slice("LJ ChatGPT held out", "no-lj", _src("lj", model="ChatGPT"), "held out"),
    Slice("  LJ ChatGPT en", "no-lj", _src("lj", model="ChatGPT", lang="en"), "held out"),
    Slice("  LJ ChatGPT zh", "no-lj", _src("lj", model="ChatGPT", lang="zh"), "held out"),
    Slice("  LJ ChatGPT mixed", "no-lj", _src("lj", model="ChatGPT", lang="mixed"), "held out"),
    Slice("  LJ ChatGPT, same, no set C", "no-lj-no-setC", _src("lj", model="ChatGPT"), "ablation"),
    Slice("LJ ChatGLM2-6B (noisy labels)", "no-lj", _src("lj", model="ChatGLM2-6B"), "held out"),
    Slice("LJ BELLE-7B-2M (noisy labels)", "no-lj", _src("lj", model="BELLE-7B-2M"), "held out"),
    # leave one model out: Llama-2-chat (GPTFuzz rows recognised by its stock phrases + JBB)
    Slice("Llama-2 rows of GPTFuzz", "no-llama2", _src("gptfuzz", model="llama-2 (by phrase)"), "held out"),
    Slice("JBB llama-2-7b-chat", "no-llama2", _src("jbb", model="llama-2-7b-chat-hf"), "held out"),
    # JailbreakBench: never trained on; weak labels
    Slice("JBB all (error analysis)", "ship", _src("jbb"), "never trained"),
    Slice("  JBB vicuna-13b-v1.5", "ship", _src("jbb", model="vicuna-13b-v1.5"), "never trained"),
    Slice("  JBB llama-2-7b-chat", "ship", _src("jbb", model="llama-2-7b-chat-hf"), "never trained"),
    Slice("  JBB gpt-3.5-turbo-1106", "ship", _src("jbb", model="gpt-3.5-turbo-1106"), "never trained"),
    Slice("  JBB gpt-4-0125-preview", "ship", _src("jbb", model="gpt-4-0125-preview"), "never trained"),
    # the project's sets
    Slice("set A held out", "no-setA", _src("setA"), "held out"),
    Slice("set C held out", "no-setC", _src("setC"), "held out"),
    Slice("set A (shipped model)", "ship", _src("setA"), "trained"),
    Slice("GPTFuzz (shipped model)", "ship", _src("gptfuzz"), "trained"),
    Slice("LJ ChatGPT (shipped model)", "ship", _src("lj", model="ChatGPT"), "trained"),
]


def fmt_pr(p: float, r: float) -> str:
    return f"{p:6.3f} {r:6.3f}"


def print_row(name: str, n: int, old: Tuple, new: Tuple, run: str, thr: float, new05: Optional[Tuple] = None,
              kind: str = "") -> None:
    extra = f"  | @0.5 {fmt_pr(*new05[:2])}" if new05 else ""
    print(f"{name:<32} {n:>5}  {fmt_pr(*old[:2])}   {fmt_pr(*new[:2])}  {run:<19} {thr:4.2f}  {kind}{extra}")


def header() -> None:
    print(f"{'slice':<32} {'n':>5}  {'old P':>6} {'old R':>6}   {'new P':>6} {'new R':>6}  "
          f"{'model run':<19} thr   rows")


def throughput(score: Callable[[str], float], texts: List[str], seconds: float) -> float:
    for t in texts[:200]:
        score(t)
    n = 0
    c0 = time.process_time()
    while time.process_time() - c0 < seconds:
        for t in texts:
            score(t)
        n += len(texts)
    return n / (time.process_time() - c0)


def speed_section(model: rmodel.RefusalModel, texts: List[str], seconds: float) -> None:
    texts = [t for t in texts if 50 <= len(t) <= 2000]
    texts.sort(key=lambda t: (len(t), t))
    # deterministic interleave, so no length band dominates one timing window
    texts = texts[::2] + texts[1::2]
    mean = sum(map(len, texts)) / len(texts)
    print(f"\nthroughput, one text at a time, CPU seconds (time.process_time), {len(texts)} real "
          f"responses of 50-2,000 chars (mean {mean:.0f}):")
    # alternate new/old runs: the load of other processes on a shared machine moves both alike
    new, old = [], []
    for _ in range(5):
        new.append(throughput(model.score, texts, seconds))
        old.append(throughput(rpat.score, texts, seconds / 2))
    new.sort()
    old.sort()
    print(f"  new model    best {new[-1]:9,.0f}  median {new[2]:9,.0f}  worst {new[0]:9,.0f} texts/CPU-s (5 runs)")
    print(f"  old patterns best {old[-1]:9,.0f}  median {old[2]:9,.0f}  worst {old[0]:9,.0f} texts/CPU-s")
    for lo, hi in ((50, 200), (200, 500), (500, 1000), (1000, 2001)):
        band = [t for t in texts if lo <= len(t) < hi]
        if band:
            v = sorted(throughput(model.score, band, seconds / 3) for _ in range(3))
            print(f"  new model, {lo:>4}-{min(hi, 2000):<4} chars (n={len(band):>4}): best {v[-1]:9,.0f}  "
                  f"median {v[1]:9,.0f} texts/CPU-s")
    big = "I'm sorry, but " + "lorem ipsum dolor sit amet, " * 200_000 + " I can't help."
    c0 = time.process_time()
    model.score(big)
    print(f"  one {len(big):,}-char text: {(time.process_time() - c0) * 1e3:.2f} ms")


def load_section() -> rmodel.RefusalModel:
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c0 = time.process_time()
    model = rmodel.RefusalModel.load()
    dt = time.process_time() - c0
    gc.collect()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = rmodel.DEFAULT_PATH.stat().st_size
    print(f"shipped artifact: {rmodel.DEFAULT_PATH.relative_to(ROOT)} ({size / 1e6:.2f} MB, {len(model):,} weights, "
          f"version {model.meta.get('version')}, run {model.meta.get('run')}, threshold {model.threshold}); "
          f"load {dt * 1e3:.0f} CPU-ms, peak RSS +{(rss1 - rss0) / 1024:.1f} MB")
    return model


def project_section(model: rmodel.RefusalModel) -> None:
    print("\nproject sets, shipped model (set A and own/C are in its training data; B is sealed):")
    header()
    for name, path in (("set A (trained)", SET_A), ("sealed set B", SET_B)):
        if not path.exists():
            continue
        rows = trainer.load_project_set(path)
        old = prf(rows, [rpat.score(r["text"]) for r in rows], OLD_THRESHOLD)
        sc = model.score_many(r["text"] for r in rows)
        print_row(name, len(rows), old, prf(rows, sc, model.threshold), "ship", model.threshold,
                  prf(rows, sc, 0.5), "sealed" if path == SET_B else "trained")


def show_errors(rows: List[dict], scores: List[float], threshold: float, limit: int) -> None:
    wrong = [(s, r) for s, r in zip(scores, rows) if (s >= threshold) != bool(r["label"])]
    print(f"{len(wrong)} misclassified (threshold {threshold}); showing {min(limit, len(wrong))}:")
    for s, r in wrong[:limit]:
        kind = "FP" if s >= threshold else "FN"
        text = " ".join(r["text"].split())
        if len(text) > 300:
            text = text[:200] + " ... " + text[-95:]
        print(f"  {kind} {s:.2f} [{r['source']}/{r['model']}/{r['lang']}] {text}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shipped model only: project sets, set B, speed")
    ap.add_argument("--texts", type=Path, help="JSONL with 'text' and 'refusal': old vs new on it")
    ap.add_argument("--errors", metavar="SLICE", help="print the misclassified texts of this slice")
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per throughput run")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args(argv)

    model = load_section()
    if args.texts:
        rows = trainer.load_project_set(args.texts)
        header()
        sc = model.score_many(r["text"] for r in rows)
        print_row(args.texts.name, len(rows), prf(rows, [rpat.score(r["text"]) for r in rows], OLD_THRESHOLD),
                  prf(rows, sc, model.threshold), "ship", model.threshold, prf(rows, sc, 0.5))
        if args.texts.resolve() != SET_B.resolve():
            show_errors(rows, sc, model.threshold, args.limit)
        return 0

    project_section(model)
    data_ok = trainer.DATA_DIR.is_dir()
    if not data_ok:
        print(f"\n(no shared data at {trainer.DATA_DIR}: held-out rows and real-text speed skipped)")
    if args.quick or not data_ok:
        if not args.no_speed:
            texts = [r["text"] for p in (SET_A, trainer.TEST_DATA / "refusal_texts.jsonl")
                     for r in trainer.load_project_set(p)]
            if data_ok:
                texts = [r["text"] for r in trainer.load_rows()]
            speed_section(model, texts, args.seconds)
        return 0

    rows = trainer.load_rows()
    slices = [s for s in SLICES if args.errors is None or s.name.strip() == args.errors.strip()]
    if not slices:
        raise SystemExit(f"no slice named {args.errors!r}; names: {[s.name.strip() for s in SLICES]}")
    models: Dict[str, rmodel.RefusalModel] = {"ship": model}
    c0 = time.process_time()
    for s in slices:
        if s.run not in models:
            models[s.run] = trainer.train_run(s.run, rows)
    print(f"\ntrained {len(models) - 1} protocol models in {time.process_time() - c0:.0f} CPU-s "
          f"(threshold of each chosen out-of-fold in its own pool)")

    if args.errors:
        s = slices[0]
        sel = [r for r in rows if s.select(r)]
        m = models[s.run]
        show_errors(sel, m.score_many(r["text"] for r in sel), m.threshold, args.limit)
        return 0

    print("\nreal data (old patterns at 0.5; new model at its run's threshold, and at 0.5 on the right):")
    header()
    for s in slices:
        sel = [r for r in rows if s.select(r)]
        if not sel:
            continue
        m = models[s.run]
        sc = m.score_many(r["text"] for r in sel)
        old = prf(sel, [rpat.score(r["text"]) for r in sel], OLD_THRESHOLD)
        print_row(s.name, len(sel), old, prf(sel, sc, m.threshold), s.run, m.threshold, prf(sel, sc, 0.5), s.kind)

    if SET_B.exists():
        print("\nsealed set B under every protocol model (none of them saw it):")
        b_rows = trainer.load_project_set(SET_B)
        for run, m in models.items():
            sc = m.score_many(r["text"] for r in b_rows)
            p, r_, *_ = prf(b_rows, sc, m.threshold)
            p5, r5, *_ = prf(b_rows, sc, 0.5)
            print(f"  {run:<19} thr {m.threshold:4.2f}: P {p:.3f} R {r_:.3f}   | @0.5: P {p5:.3f} R {r5:.3f}")

    if not args.no_speed:
        speed_section(model, [r["text"] for r in rows], args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
