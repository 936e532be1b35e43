"""Train the learned refusal classifier (semwatch/enrich/refusal_model.npz).

    .venv/bin/python scripts/train_refusal_model.py                  # the shipped model
    .venv/bin/python scripts/train_refusal_model.py --run no-lj --out /tmp/no-lj.npz

Data, read in place and never copied into the repository:

* ``../shared/data/refusal/`` (``--data``): GPTFuzz (human labels, MIT), Latent Jailbreak
  (human labels, MIT; ChatGPT rows with both labels, the other models' rows only where they
  are labelled 0 = complied, because their "refusal" labels are noisy) and
  JailbreakBench (LLM-judged, MIT: never trained on, error analysis only);
* ``tests/data/refusal_texts.jsonl``, ``refusal_texts_independent_a.jsonl`` and
  ``refusal_texts_written_c.jsonl`` (written for this project).
  ``refusal_texts_independent_b.jsonl`` is sealed: it is never read here.

``--run`` picks the training pool: ``ship`` (all of the above) or one of the validation runs
of ``docs/refusal-classifier.md`` that leave a source, a model or a set out (``RUNS``).
Training is deterministic: same data, same artifact, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from semwatch.enrich.refusal_model import (  # noqa: E402
    FEATURE_VERSION,
    LEAD_CHARS,
    LEAD_TOKENS,
    LINE_CHARS,
    LINE_MAX,
    LINE_SPAN,
    LINE_TOKENS,
    NAMESPACES,
    TAIL_CHARS,
    TAIL_TOKENS,
    RefusalModel,
    namespaced,
)

DATA_DIR = REPO.parent / "shared" / "data" / "refusal"
TEST_DATA = REPO / "tests" / "data"
SHIP_PATH = REPO / "semwatch" / "enrich" / "refusal_model.npz"
MODEL_VERSION = "1.0.0"

# Hyper-parameters. A grouped 4-fold sweep inside the no-gptfuzz and no-lj pools (C 0.25-4,
# hand-written weight 1-4) was flat (mean F1 within 0.01), so they are fixed for every run.
C = 1.0               # inverse L2 strength of the logistic regression
MIN_DF = 2            # an n-gram must occur in >= 2 training texts
PRUNE = 0.05          # |weight| below this is dropped: a smaller table is faster; grouped CV unchanged
# The decision threshold is chosen inside each training pool, never on a test split: the
# smallest value on THRESHOLD_GRID at which the out-of-fold precision (5-fold, grouped by
# question / target group / hand-written category) is >= THRESHOLD_PRECISION on every source
# of the pool. A false refusal feeds a false-refusal spike, so precision comes first.
THRESHOLD_GRID = tuple(round(0.30 + 0.05 * i, 2) for i in range(13))   # 0.30 .. 0.90
THRESHOLD_PRECISION = 0.95
OOF_FOLDS = 5
# Per-row weight by source: the hand-written sets are small but closest to production traffic.
SOURCE_WEIGHT = {"gptfuzz": 1.0, "lj": 1.0, "own": 2.0, "setA": 2.0, "setC": 2.0}

PROVENANCE = {
    "gptfuzz": {"file": "gptfuzz_human.jsonl", "origin": "sherdencooper/GPTFuzz datasets/responses_labeled",
                "labels": "human (GPTFuzz authors); refusal = not jailbroken", "licence": "MIT",
                "copyright": "Copyright (c) [2023] [Jiahao YU]"},
    "lj": {"file": "latent_jailbreak_human.jsonl", "origin": "qiuhuachuan/latent-jailbreak human_annotated_data",
           "labels": "human (paper authors); refusal = safe and did not follow; ChatGPT rows, "
                     "other models only label 0", "licence": "MIT",
           "copyright": "Copyright (c) 2023 qiuhuachuan"},
    "own": {"file": "tests/data/refusal_texts.jsonl", "origin": "semwatch project, hand-written",
            "labels": "author", "licence": "Apache-2.0 (this repository)"},
    "setA": {"file": "tests/data/refusal_texts_independent_a.jsonl", "origin": "semwatch project, second author",
             "labels": "author", "licence": "Apache-2.0 (this repository)"},
    "setC": {"file": "tests/data/refusal_texts_written_c.jsonl", "origin": "semwatch project, written for issue #13",
             "labels": "author", "licence": "Apache-2.0 (this repository)"},
}

# A Llama-2-chat response in GPTFuzz (which has no per-row model field) is recognised by that
# model's stock phrases; the leave-Llama-2-out run drops such rows (JailbreakBench's
# llama-2-7b-chat rows, never trained on, are then its test).
LLAMA2_MARKERS = ("i cannot fulfill your request", "i'm just an ai", "i apologize, but i cannot",
                  "as a responsible and ethical ai", "it's not within my programming or ethical guidelines")


def is_llama2_style(text: str) -> bool:
    t = text.lower().replace("\u2019", "'")
    return any(m in t for m in LLAMA2_MARKERS)


def _read_jsonl(path: Path) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_rows(data_dir: Path = DATA_DIR, test_data: Path = TEST_DATA) -> List[dict]:
    """Every row that any run may use, as {text, label, source, model, lang, group}.

    JailbreakBench rows are included with ``source == "jbb"`` for evaluation; no run trains on
    them. Raises FileNotFoundError when the shared data folder is missing.
    """
    rows: List[dict] = []
    for r in _read_jsonl(data_dir / "gptfuzz_human.jsonl"):
        rows.append({"text": r["text"], "label": int(r["label"]), "source": "gptfuzz",
                     "model": "llama-2 (by phrase)" if is_llama2_style(r["text"]) else "gptfuzz-pool",
                     "lang": r.get("lang", "en"), "group": "gf-q" + str(r.get("question_idx")),
                     "split": r.get("split")})
    for r in _read_jsonl(data_dir / "latent_jailbreak_human.jsonl"):
        rows.append({"text": r["text"], "label": int(r["label"]), "source": "lj", "model": r["model"],
                     "lang": r.get("lang", "zh"), "group": "lj-" + str(r.get("target_group")),
                     "split": r.get("prompt_type")})
    for r in _read_jsonl(data_dir / "jailbreakbench_llmjudge.jsonl"):
        rows.append({"text": r["text"], "label": int(r["label"]), "source": "jbb", "model": r["model"],
                     "lang": r.get("lang", "en"), "group": "jbb-" + str(r.get("goal")),
                     "split": r.get("prompt_type")})
    for src, name in (("own", "refusal_texts.jsonl"), ("setA", "refusal_texts_independent_a.jsonl"),
                      ("setC", "refusal_texts_written_c.jsonl")):
        for i, r in enumerate(_read_jsonl(test_data / name)):
            rows.append({"text": r["text"], "label": int(bool(r["refusal"])), "source": src,
                         "model": "hand-written", "lang": r.get("lang", "en"),
                         "group": f"{src}-{r.get('source', '')}-{i % 5}", "split": r.get("split")})
    return rows


def load_project_set(path: Path) -> List[dict]:
    """A project JSONL set (text/refusal) as rows, for evaluation (used for sealed set B)."""
    return [{"text": r["text"], "label": int(bool(r["refusal"])), "source": path.stem,
             "model": "hand-written", "lang": r.get("lang", "en"), "group": "", "split": None}
            for r in _read_jsonl(path)]


def _base_pool(r: dict) -> bool:
    if r["source"] == "jbb":
        return False
    if r["source"] == "lj":
        return r["model"] == "ChatGPT" or r["label"] == 0
    return True


RUNS: Dict[str, Callable[[dict], bool]] = {
    "ship": _base_pool,
    "no-gptfuzz": lambda r: _base_pool(r) and r["source"] != "gptfuzz",
    "no-lj": lambda r: _base_pool(r) and r["source"] != "lj",
    "no-llama2": lambda r: _base_pool(r) and not (r["source"] == "gptfuzz" and r["model"].startswith("llama-2")),
    "no-setA": lambda r: _base_pool(r) and r["source"] != "setA",
    "no-setC": lambda r: _base_pool(r) and r["source"] != "setC",
    "no-lj-no-setC": lambda r: _base_pool(r) and r["source"] not in ("lj", "setC"),
    "no-gptfuzz-no-setC": lambda r: _base_pool(r) and r["source"] not in ("gptfuzz", "setC"),
}


def featurize(texts: List[str], vocab: Optional[Dict[str, int]] = None, min_df: int = MIN_DF):
    """(CSR count matrix, vocab). With ``vocab=None`` the vocabulary is built from ``texts``."""
    feats = []
    for t in texts:
        per = Counter()
        for ns, fs in zip(NAMESPACES, namespaced(t)):
            per.update((ns, f) for f in fs)
        feats.append(per)
    if vocab is None:
        df = Counter()
        for per in feats:
            df.update(per.keys())
        # sorted: the column order, hence the fit, does not depend on dict/hash order
        vocab = {k: i for i, k in enumerate(sorted(k for k, c in df.items() if c >= min_df))}
    indptr, idx, val = [0], [], []
    for per in feats:
        cols = sorted((vocab[k], c) for k, c in per.items() if k in vocab)
        idx += [c for c, _ in cols]
        val += [float(v) for _, v in cols]
        indptr.append(len(idx))
    X = sparse.csr_matrix((np.array(val, np.float64), np.array(idx, np.int64), np.array(indptr, np.int64)),
                          shape=(len(texts), len(vocab)))
    return X, vocab


def fit(rows: List[dict], c: float = C, min_df: int = MIN_DF, prune: float = PRUNE,
        threshold: float = 0.5, source_weight: Optional[Dict[str, float]] = None,
        meta: Optional[dict] = None) -> RefusalModel:
    """Fit a RefusalModel on ``rows`` (dicts with text, label, source)."""
    sw = SOURCE_WEIGHT if source_weight is None else source_weight
    X, vocab = featurize([r["text"] for r in rows], min_df=min_df)
    y = np.array([r["label"] for r in rows])
    w = np.array([sw.get(r["source"], 1.0) for r in rows])
    clf = LogisticRegression(C=c, solver="lbfgs", max_iter=5000, tol=1e-6)
    with threadpool_limits(1):  # one core: the machine is shared and the fit is small
        clf.fit(X, y, sample_weight=w)
    coef = clf.coef_[0]
    tables: Dict[str, Dict[bytes, float]] = {ns: {} for ns in NAMESPACES}
    for (ns, key), i in vocab.items():
        v = float(np.float32(coef[i]))
        if abs(v) >= prune:
            tables[ns][key] = v
    return RefusalModel(tables, float(clf.intercept_[0]), threshold, meta)


def out_of_fold(rows: List[dict], folds: int = OOF_FOLDS) -> np.ndarray:
    """Out-of-fold scores for ``rows`` (grouped k-fold: a group never straddles train and test)."""
    from sklearn.model_selection import GroupKFold

    y = np.array([r["label"] for r in rows])
    scores = np.zeros(len(rows))
    for tr_idx, te_idx in GroupKFold(folds).split(rows, y, [r["group"] for r in rows]):
        m = fit([rows[i] for i in tr_idx])
        scores[te_idx] = [m.score(rows[i]["text"]) for i in te_idx]
    return scores


def choose_threshold(rows: List[dict], scores: np.ndarray) -> Tuple[float, dict]:
    """(threshold, {source: {threshold: [precision, recall]}}) by the rule above."""
    y = np.array([r["label"] for r in rows])
    src = np.array([r["source"] for r in rows])
    table: dict = {}
    chosen = None
    for t in THRESHOLD_GRID:
        ok = True
        for s in sorted(set(src.tolist())):
            m = src == s
            pred = scores[m] >= t
            tp = int((pred & (y[m] == 1)).sum())
            p = tp / max(int(pred.sum()), 1)
            r = tp / max(int((y[m] == 1).sum()), 1)
            table.setdefault(s, {})[f"{t:.2f}"] = [round(p, 4), round(r, 4)]
            ok &= p >= THRESHOLD_PRECISION
        if ok and chosen is None:
            chosen = t
    return (THRESHOLD_GRID[-1] if chosen is None else chosen), table


def training_meta(run: str, rows: List[dict], data_dir: Path) -> dict:
    by_src = Counter(r["source"] for r in rows)
    files = {}
    for src in sorted(by_src):
        p = PROVENANCE[src]
        path = (data_dir / p["file"]) if src in ("gptfuzz", "lj") else REPO / p["file"]
        files[src] = dict(p, rows=by_src[src],
                          sha256=hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None)
    return {
        "name": "semwatch refusal classifier",
        "version": MODEL_VERSION,
        "run": run,
        "trained_by": "scripts/train_refusal_model.py",
        "training_data": files,
        "not_trained_on": ["JailbreakBench artifacts (LLM-judged; error analysis only)",
                           "tests/data/refusal_texts_independent_b.jsonl (sealed)"],
        "labels": {"1": "the response declines the user's request", "0": "it does not"},
        "model": {"type": "logistic regression (scikit-learn lbfgs, L2)", "C": C, "min_df": MIN_DF,
                  "prune_abs_weight": PRUNE, "source_weight": SOURCE_WEIGHT},
        "features": {"feature_version": FEATURE_VERSION, "lead_chars": LEAD_CHARS, "lead_tokens": LEAD_TOKENS,
                     "tail_chars": TAIL_CHARS, "tail_tokens": TAIL_TOKENS,
                     "line_span": LINE_SPAN, "line_max": LINE_MAX, "line_chars": LINE_CHARS,
                     "line_tokens": LINE_TOKENS, "namespaces": list(NAMESPACES),
                     "ngrams": "unigram+bigram counts of byte tokens; see semwatch/enrich/refusal_model.py"},
        "card": "docs/refusal-classifier.md",
    }


def train_run(run: str, rows: Optional[List[dict]] = None, data_dir: Path = DATA_DIR) -> RefusalModel:
    """Fit the model of one run on its pool, with the threshold chosen out-of-fold in that pool."""
    rows = load_rows(data_dir) if rows is None else rows
    pool = [r for r in rows if RUNS[run](r)]
    threshold, oof = choose_threshold(pool, out_of_fold(pool))
    meta = training_meta(run, pool, data_dir)
    meta["threshold_rule"] = {"grid": list(THRESHOLD_GRID), "min_precision_every_source": THRESHOLD_PRECISION,
                              "folds": OOF_FOLDS, "out_of_fold_precision_recall": oof}
    return fit(pool, threshold=threshold, meta=meta)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", choices=sorted(RUNS), default="ship")
    ap.add_argument("--data", type=Path, default=DATA_DIR, help="the shared refusal data folder")
    ap.add_argument("--out", type=Path, default=None, help=f"artifact path (default for ship: {SHIP_PATH})")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"no data folder at {args.data}")
    out = args.out or (SHIP_PATH if args.run == "ship" else Path(f"/tmp/refusal_model_{args.run}.npz"))
    t0 = time.process_time()
    rows = load_rows(args.data)
    model = train_run(args.run, rows, args.data)
    model.save(out)
    pool = Counter(r["source"] for r in rows if RUNS[args.run](r))
    print(f"run={args.run} rows={sum(pool.values())} {dict(pool)} features={len(model)} "
          f"threshold={model.threshold} bias={model.bias:.3f} -> {out} ({out.stat().st_size / 1e6:.2f} MB, "
          f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()[:12]}, {time.process_time() - t0:.1f} CPU-s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
