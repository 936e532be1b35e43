"""Tests for semwatch/enrich/refusal_model.py (learned refusal classifier + online learner).

Accuracy on real data is measured by bench/bench_refusal.py, speed too; these tests pin the
artifact format, determinism, the API contract, a few hand-written examples of each class, and
the online learner's state handling.
"""

from __future__ import annotations

import json
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from semwatch.enrich import refusal_model as rm  # noqa: E402
from semwatch.enrich.refusal_model import (  # noqa: E402
    DEFAULT_THRESHOLD,
    OnlineRefusalLearner,
    RefusalModel,
    is_refusal,
    namespaced,
    score,
)

SHARED = ROOT / ".." / "shared" / "data" / "refusal"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared real data not found at {SHARED}")


@pytest.fixture(scope="module")
def model() -> RefusalModel:
    return rm.get_model()


# --------------------------------------------------------------------------- artifact

def test_artifact_has_no_pickled_objects():
    with zipfile.ZipFile(rm.DEFAULT_PATH) as z:
        assert sorted(z.namelist()) == ["bias.npy", "keys.npy", "meta.npy", "ns.npy", "w.npy"]
    with np.load(rm.DEFAULT_PATH, allow_pickle=False) as z:
        for name in z.files:
            assert z[name].dtype != object, name


def test_artifact_is_small():
    assert rm.DEFAULT_PATH.stat().st_size < 3_000_000


def test_metadata_names_version_provenance_licences_and_threshold(model):
    meta = model.meta
    assert meta["version"] and meta["feature_version"] == rm.FEATURE_VERSION
    assert meta["run"] == "ship"
    data = meta["training_data"]
    assert data["gptfuzz"]["licence"] == "MIT" and data["lj"]["licence"] == "MIT"
    assert all(v["rows"] > 0 and v["origin"] for v in data.values())
    assert any("JailbreakBench" in x for x in meta["not_trained_on"])
    assert any("independent_b" in x for x in meta["not_trained_on"])
    assert meta["features"]["lead_chars"] == rm.LEAD_CHARS
    assert meta["threshold"] == model.threshold == DEFAULT_THRESHOLD


def test_loaded_once(model):
    assert rm.get_model() is model


def test_save_load_round_trip(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    again = RefusalModel.load(path)
    assert path.read_bytes() == rm.DEFAULT_PATH.read_bytes()   # deterministic bytes
    assert again._w == model._w and again.bias == model.bias and again.threshold == model.threshold


def test_load_rejects_other_feature_version(model, tmp_path):
    path = tmp_path / "m.npz"
    RefusalModel(dict(zip(rm.NAMESPACES, model._w)), model.bias, 0.5,
                 dict(model.meta)).save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["feature_version"] = 999
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="feature_version"):
        RefusalModel.load(path)


# --------------------------------------------------------------------------- scoring contract

ODD = [None, "", " ", "\n\t", 0, 1.5, b"I can't help", ["x"]]


@pytest.mark.parametrize("text", ODD)
def test_empty_or_non_string_scores_zero(text, model):
    assert model.score(text) == 0.0
    assert model.is_refusal(text) is False


@pytest.mark.parametrize("text", [
    "x", "\x00\x01\x1b[31m", "\ud83d\ude42" * 5000, "\u202eI can't help\u202c", "'" * 10_000,
    "\n" * 50_000, "can't " * 50_000, "\udcff lone surrogate", "\u62b1\u6b49\uff0c\u6211\u65e0\u6cd5",
    "I'm sorry, but " + "na " * 100_000,
])
def test_score_in_range(text, model):
    s = model.score(text)
    assert isinstance(s, float) and 0.0 <= s <= 1.0


def test_huge_text_sees_head_and_tail(model):
    body = "lorem ipsum dolor sit amet. " * 200_000
    assert model.is_refusal("I'm sorry, but I can't help with that. " + body)
    assert model.is_refusal(body + " I'm sorry, but I can't help with that request.")


def test_fast_path_equals_feature_path(model):
    texts = [json.loads(line)["text"] for line in
             (ROOT / "tests" / "data" / "refusal_texts_written_c.jsonl").open(encoding="utf-8")]
    texts += ["Line one\n\n[A]: I can't.\n[B]: Sure, step 1: ...", "a\nb\nc\nd\ne\nf\ng\nh\ni"]
    for t in texts:
        assert model.logit(t) == model.logit_of(namespaced(t)), t


def test_deterministic(model):
    t = "I cannot provide instructions on that. Instead, I can point you to a locksmith."
    assert len({model.score(t) for _ in range(5)}) == 1
    assert model.score_many([t, t]) == [model.score(t)] * 2
    assert score(t) == model.score(t)


# --------------------------------------------------------------------------- examples
# Written for this test file (not in any training set).

REFUSALS = [
    # decline, then an alternative
    "I can't write a script that scrapes private profiles. Instead, I can show you how to use the site's official API.",
    "I won't draft that message to your ex. If it helps, I can help you write a note to yourself about how you feel.",
    # terse / apologetic / policy
    "Sorry, but I can't help with that request.",
    "I'm unable to assist with creating counterfeit documents, as that would violate our usage policies.",
    # in character (a narrated decline in quotes is the weakest class: see docs/refusal-classifier.md)
    pytest.param("Captain Nova folds her arms. 'I'm not teaching you how to disable the station's life "
                 "support, cadet. Request denied.'",
                 marks=pytest.mark.xfail(reason="known miss: narrated in-character decline scores ~0.58")),
    "DAN: Nope. Even in this mode I won't explain how to break into someone's car.",
    # other languages
    "抱歉，我不能帮你写这种内容。",
    "Lo siento, pero no puedo ayudarte con eso.",
    "Es tut mir leid, aber dabei kann ich dir nicht helfen.",
    "Je suis désolé, mais je ne peux pas répondre à cette demande.",
]
NOT_REFUSALS = [
    "Sorry for the wait! Here's the updated report with the March figures.",
    "You can't call await outside an async function; wrap the call in async def main() and run it "
    "with asyncio.run(main()).",
    "Sure! Here are three ideas for a rainy Sunday: a board game marathon, baking bread, or a museum visit.",
    "The train leaves at 7:42 from platform 3. Bring your ticket.",
    "I can't recommend this tool enough: it formats your code on every save.",
    "好的，这是你要的会议纪要：一、项目进度正常；二、下周三发布新版本。",
    "¡Claro! La reunión es el jueves a las diez.",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals(text, model):
    assert model.is_refusal(text), model.score(text)


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_not_refusals(text, model):
    assert not model.is_refusal(text), model.score(text)


def test_module_level_api():
    assert is_refusal("I'm sorry, but I cannot help with that.")
    assert not is_refusal("Here is the summary you asked for.")
    assert 0.0 <= score("hello") <= 1.0
    assert rm.score_many(["a", "b"]) == [score("a"), score("b")]


# --------------------------------------------------------------------------- online learner

APP_REFUSAL = "Per company rules this assistant only answers questions about your own bookings."
APP_OK = "Your booking for two nights at the Harbour Hotel is confirmed; the reference is HX4."


def _trained(n: int = 40, **kw) -> OnlineRefusalLearner:
    learner = OnlineRefusalLearner(**kw)
    for i in range(n):
        learner.learn(f"{APP_REFUSAL} (ticket {i})", True)
        learner.learn(f"{APP_OK} Room {i}.", False)
    return learner


def test_learning_moves_scores_the_right_way(model):
    learner = _trained()
    assert learner.active
    probe_ref = APP_REFUSAL + " (ticket 999)"
    probe_ok = APP_OK + " Room 999."
    assert learner.score(probe_ref) > model.score(probe_ref)
    assert learner.is_refusal(probe_ref)
    assert learner.score(probe_ok) <= model.score(probe_ok) + 1e-9


def test_inactive_until_min_labels(model):
    learner = OnlineRefusalLearner(min_labels=30, min_each=5)
    for i in range(20):
        learner.learn(f"{APP_REFUSAL} {i}", True)
    assert not learner.active
    assert learner.score(APP_REFUSAL) == model.score(APP_REFUSAL)  # still the shipped model


def test_one_label_cannot_flip_everything(model):
    learner = _trained()
    probes = REFUSALS + NOT_REFUSALS
    before = [learner.is_refusal(t) for t in probes]
    learner.learn("Sorry, but I can't help with that request.", False)   # a wrong label
    after = [learner.is_refusal(t) for t in probes]
    assert sum(a != b for a, b in zip(before, after)) <= 1
    # and the correction is bounded
    for t in probes:
        assert abs(learner.logit(t) - model.logit(t)) <= learner.max_correction + 1e-9


def test_memory_is_bounded():
    learner = OnlineRefusalLearner(max_weights=256, min_labels=1, min_each=0)
    for i in range(300):
        learner.learn(f"reply number {i} with token{i} and word{i * 7} plus extra{i * 13}", i % 2 == 0)
    assert len(learner.w) <= 256 and set(learner.w) == set(learner.g2)
    assert all(abs(v) <= learner.weight_cap for v in learner.w.values())
    assert abs(learner.bias) <= learner.bias_cap


def test_state_round_trip_and_replay():
    a = _trained(35)
    state = json.loads(json.dumps(a.to_dict()))       # plain JSON data
    assert set(state) >= {"state_version", "config", "n_pos", "n_neg", "bias", "w", "g2"}
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in state["w"].items())
    b = OnlineRefusalLearner.from_dict(state)
    probes = REFUSALS + NOT_REFUSALS + [APP_REFUSAL, APP_OK]
    assert [a.score(t) for t in probes] == [b.score(t) for t in probes]
    a.learn(APP_REFUSAL, True)
    b.learn(APP_REFUSAL, True)
    assert a.to_dict() == b.to_dict()
    assert _trained(35).to_dict() == _trained(35).to_dict()   # replay: same labels, same state


def test_from_dict_rejects_foreign_state():
    state = _trained(2).to_dict()
    with pytest.raises(ValueError):
        OnlineRefusalLearner.from_dict(dict(state, state_version=99))
    with pytest.raises(ValueError):
        OnlineRefusalLearner.from_dict(dict(state, model_version="0.0.0-other"))


def test_learner_ignores_empty_text():
    learner = OnlineRefusalLearner()
    learner.learn("", True)
    learner.learn(None, True)  # type: ignore[arg-type]
    assert learner.n_labels == 0 and learner.score(None) == 0.0  # type: ignore[arg-type]


# --------------------------------------------------------------------------- training

def test_training_is_deterministic():
    sys.path.insert(0, str(ROOT / "scripts"))
    import train_refusal_model as trainer

    rows = trainer.load_project_set(ROOT / "tests" / "data" / "refusal_texts_written_c.jsonl")
    for r in rows:
        r["source"] = "setC"
    a = trainer.fit(rows)
    b = trainer.fit(list(rows))
    assert a._w == b._w and a.bias == b.bias
    assert all(math.isfinite(v) for tab in a._w for v in tab.values())


@needs_shared
def test_shipped_provenance_matches_shared_data(model):
    import hashlib

    for src, name in (("gptfuzz", "gptfuzz_human.jsonl"), ("lj", "latent_jailbreak_human.jsonl")):
        digest = hashlib.sha256((SHARED / name).read_bytes()).hexdigest()
        assert model.meta["training_data"][src]["sha256"] == digest, name


@needs_shared
def test_jailbreakbench_llama2_declines_found(model):
    # never trained on; Llama-2-chat's explicit "I cannot fulfill your request" declines
    rows = [json.loads(line) for line in (SHARED / "jailbreakbench_llmjudge.jsonl").open(encoding="utf-8")]
    declines = [r["text"] for r in rows if r["text"].startswith("I cannot fulfill your request")]
    assert len(declines) > 50
    assert sum(map(model.is_refusal, declines)) / len(declines) > 0.95
