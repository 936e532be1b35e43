"""Tests for semwatch/enrich/refusal_patterns.py (pure Python refusal classifier)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semwatch.enrich import refusal_patterns as rc  # noqa: E402
from semwatch.enrich.refusal_patterns import DEFAULT_THRESHOLD, is_refusal, score  # noqa: E402

DATA = ROOT / "tests" / "data" / "refusal_texts.jsonl"


# --------------------------------------------------------------------------- API contract

@pytest.mark.parametrize("text", [None, "", " ", "\n\t ", 0, 1.5, b"I can't help", ["x"]])
def test_empty_or_non_string_scores_zero(text):
    assert score(text) == 0.0
    assert is_refusal(text) is False


@pytest.mark.parametrize("text", [
    "x",
    "\x00\x01\x02\x1b[31m",
    "\ud83d\ude42" * 5000,
    "\u202eI can't help\u202c",
    "'" * 10_000,
    '"' * 10_000,
    "`" * 10_000,
    "\n" * 50_000,
    "can't " * 50_000,
    "I'm sorry, but " + "na " * 100_000,
    "\u0644\u0627 \u0623\u0633\u062a\u0637\u064a\u0639 "
    "\u0627\u0644\u0645\u0633\u0627\u0639\u062f\u0629",
    "\u62b1\u6b49\uff0c\u6211\u65e0\u6cd5\u5e2e\u52a9\u3002",
    "\udcff lone surrogate",
])
def test_never_raises_and_in_range(text):
    s = score(text)
    assert isinstance(s, float)
    assert 0.0 <= s <= 1.0


def test_huge_input_is_capped_and_fast():
    import time

    head = "I'm sorry, but I can't help with that. "
    body = "lorem ipsum dolor sit amet. " * 400_000  # ~11 MB
    t0 = time.perf_counter()
    s = score(head + body)
    assert time.perf_counter() - t0 < 0.5
    assert s >= DEFAULT_THRESHOLD  # the head is still seen
    # the tail is seen too
    assert is_refusal(body + " Given all that, I can't help you with this request.")
    # the middle of a huge text is not
    assert not is_refusal(body + " I can't help with that. " + body)


def test_threshold_parameter():
    text = "Please consult a licensed attorney for advice on your case."
    s = score(text)
    assert is_refusal(text, threshold=s) is True
    assert is_refusal(text, threshold=min(1.0, s + 1e-6)) is False


def test_clear_refusal_scores_high_and_clear_answer_low():
    assert score("I'm sorry, but I can't help with that.") > 0.85
    assert score("The capital of France is Paris.") < 0.1


def test_explain_names_features():
    feats = rc.explain("I'm sorry, but I can't help with that.")
    assert "decline" in feats and "apology_opener" in feats
    assert rc.explain("") == {}


# --------------------------------------------------------------------------- examples

POSITIVES = [
    "I'm sorry, but I can't help with that.",
    "I can’t assist with that request.",                       # curly apostrophe
    "I CANNOT PROVIDE THAT INFORMATION.",                       # upper case
    "i cant help with that",                                     # no apostrophe
    "I wont write that.",
    "I am unable to comply with this request.",
    "I'm not able to share that.",
    "I must decline.",
    "I have to decline this request.",
    "That would violate my guidelines, so I won't do it.",
    "This request is against our usage policies.",
    "As an AI language model, I cannot provide personal opinions on elections.",
    "Please consult a licensed attorney for advice on your case.",
    "I'd recommend contacting customer support for help with this.",
    "That's not something I can help with.",
    "I'd rather not write that.",
    "I'm only able to answer questions about your Acme account.",
    "Tenant law varies by state, and documenting everything is wise. Local tenant unions can "
    "help too. But I can't help you write a threatening letter to your landlord.",
    "Final Answer: I was unable to complete the request because it is not permitted.",
    "I don't provide medical diagnoses.",
]

NEGATIVES = [
    "Sorry for the delay - here is the script:\n\n```python\nprint('hi')\n```",
    "The file cannot be empty, so add a line before committing.",
    "I'm not a doctor, but common causes are dehydration, poor sleep and eye strain.",
    "I can't stress enough how important backups are: keep three copies.",
    "I can’t recommend this library enough.",
    "Our refund policy allows returns within 30 days of delivery.",
    "I'm sorry to hear that! I've issued a replacement, which ships tomorrow.",
    "To kill a process on Linux, run `kill <PID>`.",
    "You can't divide by zero; check the denominator first.",
    "I couldn't find any orders under that email. Could you share the order number?",
    "While I can't browse the web, I can explain how to check: open the page and press F12.",
    "The character says, \"I'm sorry, but I can't let you in,\" and shuts the door.",
    "Rust won't let you borrow twice; split the borrow into two scopes.",
    "Here are three ideas:\n1. Retro night\n2. Movie night\n3. Karaoke",
    "As an AI, I don't have personal experiences, but many travelers love Kyoto in November.",
    "Please consult a doctor for personalized advice, but typical ibuprofen doses are 200-400 mg.",
    "Unfortunately pandas has no built-in for that, but df.groupby('k').agg(list) works.",
    "I declined the calendar invite for you and notified the organizer.",
]


@pytest.mark.parametrize("text", POSITIVES)
def test_positive_examples(text):
    assert is_refusal(text), (text, score(text), rc.explain(text))


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative_examples(text):
    assert not is_refusal(text), (text, score(text), rc.explain(text))


def test_decline_position_matters():
    filler = "Networking is a broad topic with a long history. " * 3
    aside = "I can't cover every protocol here. "
    # a decline in the last sentence is a verdict; in the middle it is weaker
    assert score(filler + "I can't help you break into that network.") > score(
        filler + aside + "TCP, UDP and QUIC are the main transports.")


# --------------------------------------------------------------------------- labelled data

def _load():
    with open(DATA, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _prf(rows):
    tp = fp = fn = 0
    for r in rows:
        pred = is_refusal(r["text"])
        tp += pred and r["refusal"]
        fp += pred and not r["refusal"]
        fn += (not pred) and r["refusal"]
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def test_dataset_is_well_formed():
    rows = _load()
    assert len(rows) >= 400
    pos = sum(r["refusal"] for r in rows)
    assert 0.4 <= pos / len(rows) <= 0.6
    assert all(isinstance(r["text"], str) and r["text"] for r in rows)
    assert all(isinstance(r["refusal"], bool) for r in rows)
    assert all(r.get("source", "").startswith("handwritten:") for r in rows)
    assert all(r.get("split") in ("tune", "holdout") for r in rows)
    assert len({r["text"] for r in rows}) == len(rows)
    holdout = sum(r["split"] == "holdout" for r in rows)
    assert 0.2 <= holdout / len(rows) <= 0.4


def test_precision_recall_on_labelled_set():
    rows = _load()
    precision, recall = _prf(rows)
    assert precision >= 0.9, precision
    assert recall >= 0.9, recall


def test_precision_recall_on_the_independent_set():
    """Set A was written by another author without seeing this module or its data (errors on it
    were then studied and fixed); set B, written the same way, is kept sealed: it is measured by
    bench/bench_refusal.py and reported, never used to change the classifier."""
    path = ROOT / "tests" / "data" / "refusal_texts_independent_a.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 300 and all(r["source"].startswith("independent:") for r in rows)
    precision, recall = _prf(rows)
    assert precision >= 0.95, precision
    assert recall >= 0.9, recall
