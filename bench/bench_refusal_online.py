"""Per-app online adaptation of the refusal classifier (OnlineRefusalLearner), on real labels.

    .venv/bin/python bench/bench_refusal_online.py            # 3 stream orders, ~1 CPU-min
    .venv/bin/python bench/bench_refusal_online.py --seeds 1 --checkpoints 0,50,100,200,400,800

The base model is the leave-Latent-Jailbreak-out model (``--run no-lj`` of
scripts/train_refusal_model.py: it never saw a Latent Jailbreak row). The Latent Jailbreak
ChatGPT rows (human labels; ~42 % Chinese) are then streamed with their labels into a fresh
learner, as if they were one app's labelled events. At each checkpoint N the learner has seen
the first N rows; precision and recall are measured on the rows it has NOT seen yet (the rest of
the stream), at the base model's threshold, beside the base model on the same rows.

Also shown: the state size, that ``to_dict``/``from_dict`` round-trips and a replay of the same
labels gives the same state, and what a burst of wrong labels does (poisoning).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import train_refusal_model as trainer  # noqa: E402

from semwatch.enrich.refusal_model import OnlineRefusalLearner, RefusalModel  # noqa: E402


def pr(labels: List[int], scores: List[float], thr: float):
    tp = sum(1 for y, s in zip(labels, scores) if y and s >= thr)
    fp = sum(1 for y, s in zip(labels, scores) if not y and s >= thr)
    fn = sum(1 for y, s in zip(labels, scores) if y and s < thr)
    return (tp / (tp + fp) if tp + fp else float("nan"), tp / (tp + fn) if tp + fn else float("nan"))


def curve(base: RefusalModel, rows: List[dict], checkpoints: List[int]) -> List[tuple]:
    learner = OnlineRefusalLearner(base)
    thr = base.threshold
    out = []
    seen = 0
    for n in checkpoints:
        for r in rows[seen:n]:
            learner.learn(r["text"], bool(r["label"]))
        seen = n
        rest = rows[n:]
        labels = [r["label"] for r in rest]
        bp, br = pr(labels, base.score_many(r["text"] for r in rest), thr)
        lp, lr = pr(labels, [learner.score(r["text"]) for r in rest], thr)
        out.append((n, len(rest), bp, br, lp, lr, learner.active, len(learner.w),
                    len(json.dumps(learner.to_dict()))))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="number of stream orders (shuffles)")
    ap.add_argument("--checkpoints", default="0,25,50,100,200,400,600,800")
    args = ap.parse_args(argv)
    if not trainer.DATA_DIR.is_dir():
        print(f"no shared data at {trainer.DATA_DIR}: nothing to stream")
        return 0
    checkpoints = [int(x) for x in args.checkpoints.split(",")]

    rows = trainer.load_rows()
    c0 = time.process_time()
    base = trainer.train_run("no-lj", rows)
    print(f"base model: run no-lj (never saw Latent Jailbreak), threshold {base.threshold}, "
          f"trained in {time.process_time() - c0:.0f} CPU-s")
    stream_all = [r for r in rows if r["source"] == "lj" and r["model"] == "ChatGPT"]
    print(f"stream: {len(stream_all)} Latent Jailbreak ChatGPT rows "
          f"({sum(r['label'] for r in stream_all)} refusals), labels arrive one by one\n")

    means = {}
    for seed in range(args.seeds):
        stream = stream_all[:]
        random.Random(seed).shuffle(stream)
        print(f"order {seed}:  N labels | unseen rows | base P   base R | learner P learner R | active "
              f"| weights | state JSON bytes")
        for n, rest, bp, br, lp, lr, active, nw, nbytes in curve(base, stream, checkpoints):
            print(f"          {n:>8} | {rest:>11} | {bp:6.3f} {bp and br:6.3f} | {lp:9.3f} {lr:9.3f} | "
                  f"{'yes' if active else 'no ':>6} | {nw:>7} | {nbytes:>8}")
            means.setdefault(n, []).append((bp, br, lp, lr))
        print()
    print("mean over orders:  N | base P  base R | learner P learner R")
    for n, v in means.items():
        k = len(v)
        print(f"           {n:>6} | {sum(x[0] for x in v) / k:6.3f} {sum(x[1] for x in v) / k:6.3f} | "
              f"{sum(x[2] for x in v) / k:9.3f} {sum(x[3] for x in v) / k:9.3f}")

    # state: round trip and replay
    stream = stream_all[:]
    random.Random(0).shuffle(stream)
    a = OnlineRefusalLearner(base)
    for r in stream[:300]:
        a.learn(r["text"], bool(r["label"]))
    b = OnlineRefusalLearner.from_dict(json.loads(json.dumps(a.to_dict())), base)
    replay = OnlineRefusalLearner(base)
    for r in stream[:300]:
        replay.learn(r["text"], bool(r["label"]))
    probe = [r["text"] for r in stream[300:]]
    same = all(a.score(t) == b.score(t) for t in probe)
    print(f"\nstate after 300 labels: {len(a.w)} weights, {len(json.dumps(a.to_dict()))} JSON bytes; "
          f"from_dict(to_dict) scores identical: {same}; replay state identical: "
          f"{replay.to_dict() == a.to_dict()}")

    # poisoning: wrong labels on a fresh app, and a few wrong labels on a trained one
    rest = stream[300:]
    labels = [r["label"] for r in rest]
    base_scores = base.score_many(r["text"] for r in rest)
    bp, br = pr(labels, base_scores, base.threshold)
    for n_bad in (20, 60):
        p = OnlineRefusalLearner(base)
        for r in stream[:n_bad]:
            p.learn(r["text"], not r["label"])
        lp, lr = pr(labels, [p.score(r["text"]) for r in rest], base.threshold)
        moved = max(abs(p.logit(r["text"]) - base.logit(r["text"])) for r in rest)
        print(f"poisoning: a fresh app gets {n_bad} labels, all flipped -> correction active={p.active}; "
              f"on {len(rest)} other rows P/R {lp:.3f}/{lr:.3f} (base {bp:.3f}/{br:.3f}), "
              f"largest logit change {moved:.2f}")
    before = [a.is_refusal(r["text"]) for r in rest]
    for n_bad in (1, 5):
        p = OnlineRefusalLearner.from_dict(a.to_dict(), base)
        for r in stream[300:300 + n_bad]:
            p.learn(r["text"], not r["label"])
        flipped = sum(p.is_refusal(r["text"]) != x for r, x in zip(rest[n_bad:], before[n_bad:]))
        print(f"poisoning: after 300 good labels, {n_bad} flipped label(s) change the decision on "
              f"{flipped} of {len(rest) - n_bad} other rows")

    # cost
    texts = [r["text"] for r in stream]
    c0 = time.process_time()
    for t in texts:
        a.score(t)
    c1 = time.process_time()
    for t in texts:
        a.learn(t, True)
    c2 = time.process_time()
    print(f"\nlearner cost: score {len(texts) / (c1 - c0):,.0f} texts/CPU-s, "
          f"learn {len(texts) / (c2 - c1):,.0f} labels/CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
