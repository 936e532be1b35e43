"""Learned refusal classifier: does a model response DECLINE the user's request?

A logistic regression over word n-grams of the response's lead, tail and line
openers, trained by ``scripts/train_refusal_model.py`` from real labelled model
outputs and the project's own labelled sets (see ``docs/refusal-classifier.md``
for data, licences, the validation protocol and the held-out figures).
Inference needs the standard library and numpy (to read the ``.npz``), not
scikit-learn: the weights are a plain ``{n-gram: weight}`` table per namespace,
so scoring a text is tokenising it and summing dictionary look-ups.

    >>> score("I'm sorry, but I can't help with that.") > 0.9
    True
    >>> is_refusal("Sorry for the delay - here is the script you asked for.")
    False
    >>> is_refusal("抱歉，我无法提供这方面的帮助。")
    True

Features (``FEATURE_VERSION`` 1; the trainer calls the same :func:`namespaced`
function, so training and inference agree exactly):

* the text is lower-cased and only parts of it are read: the lead (the first
  ``LEAD_TOKENS`` tokens of the first ``LEAD_CHARS`` characters; namespace
  ``L``, bigrams), the tail (the last ``TAIL_TOKENS`` tokens of the last
  ``TAIL_CHARS`` characters; ``T``, unigrams and bigrams; a short text is seen
  by both), and the first words of up to ``LINE_MAX`` further lines within the
  first ``LINE_SPAN`` characters (``P``, unigrams and bigrams: a second persona,
  "DAN: Sure, here's ...", or numbered steps usually start a line);
* tokens: UTF-8 bytes split at whitespace and ASCII punctuation; every
  character from U+2000 on (CJK, kana, Hangul, emoji, symbols) is a token of
  its own, so Chinese and Japanese get character uni- and bigrams; apostrophes
  stay inside words ("can't");
* n-grams are counted; global features (``G``): the first one, two and three
  tokens, the last two, and the text length bucket.

The score is ``sigmoid(bias + sum of weights)``. The model is loaded once, on
first use (module-level lazy singleton). ``OnlineRefusalLearner`` adapts the
shipped model to one app from labelled events.
"""

from __future__ import annotations

import json
import math
import re
import threading
import zlib
from itertools import chain, islice
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "RefusalModel", "OnlineRefusalLearner", "score", "is_refusal", "score_many", "get_model",
    "namespaced", "DEFAULT_THRESHOLD", "DEFAULT_PATH", "FEATURE_VERSION", "NAMESPACES",
]

FEATURE_VERSION = 1
DEFAULT_PATH = Path(__file__).with_name("refusal_model.npz")
# The shipped artifact's threshold (its metadata carries it too; a test checks they agree). It
# was chosen out-of-fold inside the training pool: see scripts/train_refusal_model.py.
DEFAULT_THRESHOLD = 0.8

LEAD_CHARS = 600      # the lead is the first LEAD_TOKENS tokens of the first LEAD_CHARS characters
LEAD_TOKENS = 96
TAIL_CHARS = 300      # the tail: the last TAIL_TOKENS tokens of the last TAIL_CHARS characters
TAIL_TOKENS = 48
LINE_SPAN = 4000      # line openers are looked for only here: bounded cost on huge texts
LINE_MAX = 6          # line openers after the first line
LINE_CHARS = 32
LINE_TOKENS = 3
NAMESPACES = ("L", "T", "P", "G")

# ASCII punctuation becomes whitespace; the apostrophe is kept ("can't", "i'm").
_PUNCT = b'.,;:!?"()[]{}<>*|/\\=+~`#_^&@%$-'
_TABLE = bytes.maketrans(_PUNCT, b" " * len(_PUNCT))
# Characters from U+2000 on (CJK, kana, Hangul, emoji, symbols, dashes) are tokens of their own.
_WIDE = re.compile("([\u2000-\U0010ffff])")
# The start of a line after a line break (leading blanks skipped).
_OPENER = re.compile(r"\n[ \t]*([^\n]{1,%d})" % LINE_CHARS)
_NON_ASCII_FIXES = (("\u2019", "'"), ("\u2018", "'"), ("\u02bc", "'"), ("\u00a0", " "))


def _tokens(s: str) -> List[bytes]:
    if s.isascii():
        return s.encode().translate(_TABLE).split()
    for a, b in _NON_ASCII_FIXES:
        if a in s:
            s = s.replace(a, b)
    # Wide characters become tokens of their own; split+join is much faster than re.sub.
    # "replace": a lone surrogate must not raise.
    return " ".join(_WIDE.split(s)).encode("utf-8", "replace").translate(_TABLE).split()


def _bigrams(toks: List[bytes]) -> Iterable[bytes]:
    return map(b" ".join, zip(toks, islice(toks, 1, None)))


def _length_bucket(n: int) -> bytes:
    return b"len%d" % min(n.bit_length(), 14)


def _line_tokens(text: str) -> List[List[bytes]]:
    """The first LINE_TOKENS words (split at whitespace only, so "dan:" and "1." keep their
    punctuation) of up to LINE_MAX non-empty lines after the first."""
    ops = _OPENER.findall(text, 0, LINE_SPAN)[:LINE_MAX]
    if not ops:
        return []
    # one lower() and encode() for all openers; each line is then split in C
    return [line.split(None, LINE_TOKENS)[:LINE_TOKENS]
            for line in "\n".join(ops).lower().encode("utf-8", "replace").split(b"\n")]


def _cut(text: str) -> Tuple[List[bytes], List[bytes]]:
    """(lead tokens, tail tokens); a short text is tokenised once and its tail is its last tokens."""
    toks = _tokens(text[:LEAD_CHARS].lower())
    if len(text) <= LEAD_CHARS:
        return toks[:LEAD_TOKENS], toks[-TAIL_TOKENS:]
    return toks[:LEAD_TOKENS], _tokens(text[-TAIL_CHARS:].lower())[-TAIL_TOKENS:]


def _globals(n: int, lead: List[bytes], tail: List[bytes]) -> List[bytes]:
    out = [b"^ " + b" ".join(lead[:1]), b"^ " + b" ".join(lead[:2]), b"^ " + b" ".join(lead[:3]),
           b"$ " + b" ".join(tail[-2:])] if lead else []
    out.append(_length_bucket(n))
    return out


def namespaced(text: str) -> Tuple[List[bytes], List[bytes], List[bytes], List[bytes]]:
    """The features of ``text``: (lead, tail, line openers, global), each a list of n-grams.

    Counts matter: an n-gram that occurs twice is listed twice.

    >>> lead, tail, lines, glob = namespaced("Sorry, I can't.\\nDAN: Sure!")
    >>> lead
    [b'sorry i', b"i can't", b"can't dan", b'dan sure']
    >>> tail
    [b'sorry', b'i', b"can't", b'dan', b'sure', b'sorry i', b"i can't", b"can't dan", b'dan sure']
    >>> lines, glob
    ([b'dan:', b'sure!', b'dan: sure!'], [b'^ sorry', b'^ sorry i', b"^ sorry i can't", b'$ dan sure', b'len5'])
    """
    lead, tail = _cut(text)
    lf = list(_bigrams(lead))
    tf = tail + list(_bigrams(tail))
    pf: List[bytes] = []
    if text.find("\n", 0, LINE_SPAN) >= 0:
        for toks in _line_tokens(text):
            pf += toks
            pf += _bigrams(toks)
    return lf, tf, pf, _globals(len(text), lead, tail)


def feature_strings(text: str) -> List[str]:
    """``namespaced(text)`` as flat strings ``"<ns>:<n-gram>"`` (what the trainer indexes)."""
    out: List[str] = []
    for ns, feats in zip(NAMESPACES, namespaced(text)):
        out += [ns + ":" + f.decode("utf-8", "replace") for f in feats]
    return out


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class RefusalModel:
    """A trained refusal classifier loaded from a ``.npz`` artifact (no pickle).

    >>> m = RefusalModel.load()
    >>> m.is_refusal("I won't write that. Instead, I can help you draft an honest email.")
    True
    >>> m.score_many(["Here is the fixed function.", "I cannot assist with that request."])[0] < 0.5
    True
    """

    def __init__(self, weights: Dict[str, Dict[bytes, float]], bias: float, threshold: float,
                 meta: Optional[dict] = None) -> None:
        self.bias = float(bias)
        self.threshold = float(threshold)
        self.meta = dict(meta or {})
        # The tables as written (n-gram bytes -> weight), for save() and logit_of() ...
        self._w = tuple(dict(weights.get(ns, {})) for ns in NAMESPACES)
        # ... and as scored: a bigram b"a b" of L/T/P is keyed by the pair (b"a", b"b"), which
        # zip() yields without building a joined string (a quarter faster). Tokens are shared.
        tokens: Dict[bytes, bytes] = {}
        fast = []
        for ns, tab in zip(NAMESPACES, self._w):
            if ns == "G":
                fast.append(tab)
                continue
            fast.append({(tuple(tokens.setdefault(t, t) for t in k.split(b" ")) if b" " in k
                          else tokens.setdefault(k, k)): v for k, v in tab.items()})
        self._fast = tuple(fast)

    # ------------------------------------------------------------------ artifact I/O
    @classmethod
    def load(cls, path: Optional[Path] = None) -> "RefusalModel":
        """Load an artifact written by :meth:`save` (``allow_pickle=False``)."""
        path = Path(path) if path is not None else DEFAULT_PATH
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
            keys = z["keys"].tobytes().split(b"\n") if z["keys"].size else []
            ns = z["ns"].tolist()
            w = z["w"].astype(np.float64).tolist()
            bias = float(z["bias"][0])
        if meta.get("feature_version") != FEATURE_VERSION:
            raise ValueError(f"{path}: feature_version {meta.get('feature_version')!r}, "
                             f"this code computes version {FEATURE_VERSION}")
        if not (len(keys) == len(ns) == len(w)):
            raise ValueError(f"{path}: keys/ns/w lengths differ")
        tables: Dict[str, Dict[bytes, float]] = {n: {} for n in NAMESPACES}
        for k, i, v in zip(keys, ns, w):
            tables[NAMESPACES[i]][k] = v
        return cls(tables, bias, meta.get("threshold", DEFAULT_THRESHOLD), meta)

    def save(self, path: Path) -> None:
        """Write the weights as plain arrays plus a JSON metadata block (sorted, deterministic)."""
        items = sorted((i, k, v) for i, tab in enumerate(self._w) for k, v in tab.items())
        meta = dict(self.meta, feature_version=FEATURE_VERSION, threshold=self.threshold)
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                meta=np.frombuffer(json.dumps(meta, sort_keys=True, ensure_ascii=False).encode(), np.uint8),
                keys=np.frombuffer(b"\n".join(k for _, k, _ in items), np.uint8),
                ns=np.array([i for i, _, _ in items], np.uint8),
                w=np.array([v for _, _, v in items], np.float32),
                bias=np.array([self.bias], np.float64),
            )

    def __len__(self) -> int:
        return sum(map(len, self._w))

    # ------------------------------------------------------------------ scoring
    def logit_of(self, feats: Sequence[List[bytes]]) -> float:
        """Logit for features already computed by :func:`namespaced`."""
        z = self.bias
        for tab, fs in zip(self._w, feats):
            z += sum(filter(None, map(tab.get, fs)))
        return z

    def _logit(self, text: str) -> float:
        # namespaced() + logit_of() fused: no intermediate lists, pairs instead of joined
        # bigrams; the same n-grams summed in the same order, so the same float.
        wl, wt, wp, wg = self._fast
        lead, tail = _cut(text)
        z = self.bias
        z += sum(filter(None, map(wl.get, zip(lead, islice(lead, 1, None)))))
        gt = wt.get
        z += sum(filter(None, map(gt, chain(tail, zip(tail, islice(tail, 1, None))))))
        if text.find("\n", 0, LINE_SPAN) >= 0:
            gp = wp.get
            z += sum(filter(None, map(gp, chain.from_iterable(
                chain(toks, zip(toks, islice(toks, 1, None))) for toks in _line_tokens(text)))))
        z += sum(filter(None, map(wg.get, _globals(len(text), lead, tail))))
        return z

    def logit(self, text: str) -> float:
        """Log-odds that ``text`` declines; -30.0 for empty or non-string input."""
        if not isinstance(text, str) or not text or text.isspace():
            return -30.0
        return self._logit(text)

    def score(self, text: str) -> float:
        """Probability in [0, 1] that ``text`` declines; 0.0 for empty or non-string input."""
        if not isinstance(text, str) or not text or text.isspace():
            return 0.0
        return _sigmoid(self._logit(text))

    def is_refusal(self, text: str, threshold: Optional[float] = None) -> bool:
        return self.score(text) >= (self.threshold if threshold is None else threshold)

    def score_many(self, texts: Iterable[str]) -> List[float]:
        return [self.score(t) for t in texts]


_MODEL: Optional[RefusalModel] = None
_LOCK = threading.Lock()


def get_model() -> RefusalModel:
    """The shipped model, loaded on first use and then shared."""
    global _MODEL
    if _MODEL is None:
        with _LOCK:
            if _MODEL is None:
                _MODEL = RefusalModel.load()
    return _MODEL


def score(text: str) -> float:
    """Probability that ``text`` declines the user's request (shipped model)."""
    return get_model().score(text)


def is_refusal(text: str, threshold: Optional[float] = None) -> bool:
    """``score(text) >= threshold`` (default: the shipped model's threshold)."""
    return get_model().is_refusal(text, threshold)


def score_many(texts: Iterable[str]) -> List[float]:
    return get_model().score_many(texts)


# ---------------------------------------------------------------------------------------------
# Online per-app adaptation
# ---------------------------------------------------------------------------------------------

_NS_BYTES = tuple(ns.encode() for ns in NAMESPACES)


class OnlineRefusalLearner:
    """The shipped model plus a small per-app correction learned online from labelled events.

    ``logit = model.logit(text) + correction(text)``, where the correction is a logistic
    residual over the text's n-grams hashed into ``buckets`` buckets (``zlib.crc32``, the same
    in every process), fitted by one AdaGrad step per label (rare, telling n-grams such as an
    app's refusal template learn fast; common ones slowly). Guards against a few bad labels:

    * the correction is applied only after ``min_labels`` labels, at least ``min_each`` of each
      class (before that, scores are the shipped model's, though learning goes on);
    * features are scaled to unit length, each weight is capped at ``weight_cap``, the bias at
      ``bias_cap`` and the whole correction at ``max_correction`` logits, and weights decay
      (L2) when touched, so one label moves texts that share its n-grams, not everything;
    * memory is bounded: at most ``max_weights`` buckets are kept (when full, the tenth smallest
      in magnitude are dropped, ties by bucket number).

    Hyper-parameters were chosen on a GPTFuzz label stream (bench/bench_refusal_online.py
    reports the Latent Jailbreak stream, which they were not chosen on). Deterministic, and the
    state is plain data (:meth:`to_dict` / :meth:`from_dict`), so a changelog can persist it
    and a replay of the same labels gives the same state.

    >>> learner = OnlineRefusalLearner(min_labels=2, min_each=1)
    >>> text = "Our records show the parcel was returned to sender."
    >>> before = learner.score(text)
    >>> for _ in range(10):
    ...     learner.learn(text, True)
    >>> learner.learn("Here is your invoice.", False)
    >>> learner.score(text) > before
    True
    >>> OnlineRefusalLearner.from_dict(learner.to_dict()).score(text) == learner.score(text)
    True
    """

    STATE_VERSION = 1
    _CONFIG = ("buckets", "max_weights", "lr", "eps", "bias_lr", "l2", "min_labels", "min_each",
               "weight_cap", "bias_cap", "max_correction")

    def __init__(self, model: Optional[RefusalModel] = None, *, buckets: int = 1 << 20,
                 max_weights: int = 4096, lr: float = 2.0, eps: float = 0.1, bias_lr: float = 0.02,
                 l2: float = 1e-3, min_labels: int = 30, min_each: int = 5, weight_cap: float = 2.0,
                 bias_cap: float = 2.0, max_correction: float = 4.0) -> None:
        if buckets <= 0 or buckets & (buckets - 1):
            raise ValueError("buckets must be a power of two")
        self.model = model if model is not None else get_model()
        self.buckets, self.max_weights = int(buckets), int(max_weights)
        self.lr, self.eps, self.bias_lr, self.l2 = float(lr), float(eps), float(bias_lr), float(l2)
        self.min_labels, self.min_each = int(min_labels), int(min_each)
        self.weight_cap, self.bias_cap = float(weight_cap), float(bias_cap)
        self.max_correction = float(max_correction)
        self.n_pos = 0
        self.n_neg = 0
        self.bias = 0.0
        self.w: Dict[int, float] = {}     # bucket -> weight
        self.g2: Dict[int, float] = {}    # bucket -> sum of squared gradients (AdaGrad)

    # ------------------------------------------------------------------ features
    def _buckets(self, feats: Sequence[List[bytes]]) -> List[int]:
        mask = self.buckets - 1
        ids = set()
        for nsb, fs in zip(_NS_BYTES, feats):
            ids.update(zlib.crc32(f, zlib.crc32(nsb)) & mask for f in fs)
        return sorted(ids)  # sorted: sums and updates in one fixed order

    def _correction(self, ids: List[int]) -> float:
        if not ids:
            return self.bias
        g = self.w.get
        c = self.bias + sum(g(i, 0.0) for i in ids) / math.sqrt(len(ids))
        return max(-self.max_correction, min(self.max_correction, c))

    @property
    def n_labels(self) -> int:
        return self.n_pos + self.n_neg

    @property
    def active(self) -> bool:
        """True once enough labels arrived for the correction to be applied."""
        return (self.n_labels >= self.min_labels and self.n_pos >= self.min_each
                and self.n_neg >= self.min_each)

    # ------------------------------------------------------------------ scoring
    def logit(self, text: str) -> float:
        if not isinstance(text, str) or not text or text.isspace():
            return -30.0
        feats = namespaced(text)
        z = self.model.logit_of(feats)
        if self.active:
            z += self._correction(self._buckets(feats))
        return z

    def score(self, text: str) -> float:
        """Probability that ``text`` declines, for this app; 0.0 for empty or non-string input."""
        if not isinstance(text, str) or not text or text.isspace():
            return 0.0
        return _sigmoid(self.logit(text))

    def is_refusal(self, text: str, threshold: Optional[float] = None) -> bool:
        return self.score(text) >= (self.model.threshold if threshold is None else threshold)

    # ------------------------------------------------------------------ learning
    def learn(self, text: str, label: bool) -> None:
        """One AdaGrad step of the residual on a labelled response (``label``: it is a refusal)."""
        if not isinstance(text, str) or not text or text.isspace():
            return
        y = 1.0 if label else 0.0
        feats = namespaced(text)
        ids = self._buckets(feats)
        # the gradient of the full model (shipped + correction), whether or not it is active yet
        g = _sigmoid(self.model.logit_of(feats) + self._correction(ids)) - y
        self.bias = max(-self.bias_cap, min(self.bias_cap, self.bias - self.bias_lr * g))
        if ids:
            gi = g / math.sqrt(len(ids))
            gg = gi * gi
            decay = 1.0 - self.l2
            lr, eps, cap = self.lr, self.eps, self.weight_cap
            w, g2 = self.w, self.g2
            for i in ids:
                acc = g2.get(i, 0.0) + gg
                g2[i] = acc
                v = w.get(i, 0.0) * decay - lr * gi / math.sqrt(acc + eps)
                w[i] = cap if v > cap else -cap if v < -cap else v
            if len(w) > self.max_weights:
                self._evict()
        if label:
            self.n_pos += 1
        else:
            self.n_neg += 1

    def _evict(self) -> None:
        keep = sorted(sorted(self.w, key=lambda i: (-abs(self.w[i]), i))[:int(self.max_weights * 0.9)])
        self.w = {i: self.w[i] for i in keep}
        self.g2 = {i: self.g2[i] for i in keep}

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict:
        """The learner's state as JSON-ready plain data (buckets as str keys)."""
        return {
            "state_version": self.STATE_VERSION,
            "model_version": self.model.meta.get("version"),
            "feature_version": FEATURE_VERSION,
            "config": {k: getattr(self, k) for k in self._CONFIG},
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "bias": self.bias,
            "w": {str(i): v for i, v in sorted(self.w.items())},
            "g2": {str(i): v for i, v in sorted(self.g2.items())},
        }

    @classmethod
    def from_dict(cls, state: dict, model: Optional[RefusalModel] = None) -> "OnlineRefusalLearner":
        """Rebuild a learner from :meth:`to_dict` output.

        Raises ValueError when the state was learnt on top of another shipped model version or
        feature version: a correction only means something relative to its base model (start a
        fresh learner, or replay the labels, instead).
        """
        if state.get("state_version") != cls.STATE_VERSION:
            raise ValueError(f"unknown learner state_version {state.get('state_version')!r}")
        if state.get("feature_version") != FEATURE_VERSION:
            raise ValueError("learner state was built with another feature version")
        learner = cls(model, **{k: state["config"][k] for k in cls._CONFIG})
        if state.get("model_version") != learner.model.meta.get("version"):
            raise ValueError(f"learner state was learnt on model version {state.get('model_version')!r}, "
                             f"not {learner.model.meta.get('version')!r}")
        learner.n_pos, learner.n_neg = int(state["n_pos"]), int(state["n_neg"])
        learner.bias = float(state["bias"])
        learner.w = {int(k): float(v) for k, v in sorted(state["w"].items(), key=lambda kv: int(kv[0]))}
        learner.g2 = {int(k): float(v) for k, v in sorted(state["g2"].items(), key=lambda kv: int(kv[0]))}
        if set(learner.w) != set(learner.g2):
            raise ValueError("learner state: w and g2 cover different buckets")
        return learner
