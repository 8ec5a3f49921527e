"""Styles of the offline world, the prosody style classifier, emotion scores in scoring, eval and pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch  # noqa: F401  (before ctranslate2)

from lpo_speech.errors import UserError
from lpo_speech.judges.emotion import ProsodyStyleClassifier, emotion_scores, make_emotion_scorer, prosody_features

pytest.importorskip("pycodec2")
pytest.importorskip("piper")
pytest.importorskip("parselmouth")


@pytest.fixture(scope="module")
def styled_world(tmp_path_factory):
    """Every train item styled (style_share 1): 6 train, 3 held-out styled test items."""
    from lpo_speech.tts.world import make_tts_data

    out = tmp_path_factory.mktemp("styled")
    make_tts_data(out, 6, 3, n_dev=0, style_share=1.0, workers=1, ceiling=False, progress=False)
    return out


def _decoded(world, name):
    from lpo_speech.records import PreferencePair, load_jsonl
    from lpo_speech.tts.text import TtsTokenizer

    tok = TtsTokenizer.load(world / "tokenizer.json")
    codec = tok.make_codec()
    rows = load_jsonl(world / name, PreferencePair)
    return [(r, codec.decode(codec.unflatten(tok.model_to_codec(r.chosen_tokens[:-1])))) for r in rows], codec


def test_apply_style_edits_only_prosody_fields():
    from lpo_speech.tts.styles import apply_style

    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, 512, 50), rng.integers(0, 512, 50), rng.integers(0, 16, 50),
                      np.where(rng.random(50) < 0.3, 0, rng.integers(10, 30, 50))], 1)
    high, low = apply_style(codes, "high"), apply_style(codes, "low")
    assert (high[:, :3] == codes[:, :3]).all() and (low[:, :2] == codes[:, :2]).all()
    voiced = codes[:, 3] > 0
    assert ((high[:, 3] > 0) == voiced).all() and ((low[:, 3] > 0) == voiced).all()  # voicing kept
    assert high[voiced, 3].mean() > codes[voiced, 3].mean() + 8 and low[voiced, 3].mean() < codes[voiced, 3].mean() - 5
    assert high[voiced, 3].std() > codes[voiced, 3].std() > low[voiced, 3].std()
    assert (low[:, 2] == np.clip(codes[:, 2] - 2, 0, 15)).all() and high.min() >= 0 and high[:, 3].max() <= 63
    assert (apply_style(codes, "neutral") == codes).all()
    with pytest.raises(UserError, match="unknown style 'loud'"):
        apply_style(codes, "loud")


def test_styled_speech_differs_in_measured_prosody(styled_world):
    """Decoded gold audio: the same sentence is higher and shorter in 'high' than in 'low'."""
    items, codec = _decoded(styled_world, "test_style.jsonl")  # neutral, high, low of three sentences
    feats = {r.extra["emotion"]: prosody_features(w, codec.sample_rate, r.extra["text"]) for r, w in items}
    assert feats["high"][0] > feats["neutral"][0] + 0.15 > feats["low"][0] + 0.25  # log F0 median
    train, _ = _decoded(styled_world, "train.jsonl")
    assert {r.extra["emotion"] for r, _ in train} == {"high", "low"}  # style_share 1: no neutral item


def test_classifier_fit_predict_save_load(tmp_path):
    rng = np.random.default_rng(0)
    centers = {"neutral": 0.0, "high": 3.0, "low": -3.0}
    x = np.concatenate([rng.normal(c, 0.5, (40, 7)) for c in centers.values()])
    y = [k for k in centers for _ in range(40)]
    clf = ProsodyStyleClassifier.fit(x, y)
    p = clf.predict_features(np.full((1, 7), 3.0))
    assert clf.labels == ("high", "low", "neutral") and p.shape == (1, 3) and p[0].argmax() == 0
    np.testing.assert_allclose(p.sum(1), 1.0)
    clf.save(tmp_path / "c.json")
    again = make_emotion_scorer({"type": "prosody", "path": str(tmp_path / "c.json")})
    np.testing.assert_allclose(again.predict_features(x[:5]), clf.predict_features(x[:5]))
    (tmp_path / "bad.json").write_text(json.dumps({"type": "prosody", "features": ["x"]}))
    with pytest.raises(UserError, match="not a style classifier file"):
        ProsodyStyleClassifier.load(tmp_path / "bad.json")
    with pytest.raises(UserError, match="unknown emotion scorer type 'svm'"):
        make_emotion_scorer({"type": "svm"})
    with pytest.raises(UserError, match="does not know 'happy'"):
        emotion_scores(clf, [None], 8000, ["x"], ["happy"])


def test_train_style_classifier_on_the_world(styled_world, tmp_path, lpo):
    """Real pipeline at toy size: trained on 6 styled items, checked on 3 held-out sentences."""
    from lpo_speech.tts.style_classifier import train_style_classifier

    info = train_style_classifier(styled_world, tmp_path / "clf.json", min_accuracy=0.0, progress=False)
    assert info["heldout_n"] == 3 and set(info["train_counts"]) == {"high", "low"}
    clf = ProsodyStyleClassifier.load(tmp_path / "clf.json")
    items, codec = _decoded(styled_world, "test_style.jsonl")
    scored = emotion_scores(clf, [w for _, w in items] + [None], codec.sample_rate,
                            [r.extra["text"] for r, _ in items] + ["x"], ["high", "high", "low", "low"])
    assert all(0.0 <= s["emotion"] <= 1.0 for s in scored) and scored[-1] == {"emotion": 0.0, "emotion_top": None}
    # The held-out 'high' and 'low' renditions of a sentence never trained on are told apart.
    assert [s["emotion_top"] for s in scored[1:3]] == ["high", "low"] and min(s["emotion"] for s in scored[1:3]) > 0.5
    bad = lpo("train-style-classifier", "--data", str(styled_world), "--out", str(tmp_path / "no.json"),
              "--min-accuracy", "1.01", "--quiet", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "below 1.01" in bad.stderr
    assert not (tmp_path / "no.json").exists()


def test_scorer_eval_and_pairs_carry_emotion(styled_world, tts_model, tmp_path):
    from lpo_speech.evaluate import evaluate

    items, codec = _decoded(styled_world, "test_style.jsonl")  # one item per style, neutral included
    feats = np.stack([prosody_features(w, codec.sample_rate, r.extra["text"]) for r, w in items])
    ProsodyStyleClassifier.fit(feats, [r.extra["emotion"] for r, _ in items]).save(tmp_path / "clf.json")
    spec = {"type": "prosody", "path": str(tmp_path / "clf.json")}
    kw = dict(batch_size=8, beam=1, lang="en", device="cpu", quiet=True,
              tts={"dnsmos": False, "max_seconds": 1.0, "temperature": 0.0, "emotion": spec, "sampling_threads": 1})
    res = evaluate([str(tts_model)], ["m"], str(styled_world / "test_style_prompts.jsonl"), str(tmp_path / "ev"), **kw)
    assert 0.0 <= res["m"]["emotion_acc"] <= 1.0 and set(res["m"]["emotion_acc_by_label"]) == {"neutral", "high", "low"}
    rows = [json.loads(x) for x in (tmp_path / "ev" / "m" / "utterances.jsonl").read_text().splitlines()]
    assert all(r["emotion_top"] in ("neutral", "high", "low") for r in rows)
    assert "emotion_acc" in (tmp_path / "ev" / "table.md").read_text()
    # A prompt asking for a label the scorer does not know stops before any synthesis.
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "a", "text": "hello there", "emotion": "happy"}) + "\n")
    with pytest.raises(UserError, match="does not know 'happy'"):
        evaluate([str(tts_model)], ["m"], str(tmp_path / "p.jsonl"), str(tmp_path / "ev2"), **kw)


def test_emotion_pairs_keep_intelligibility():
    """Lexicographic on emotion with a CER guard: a rejected that is much clearer is not paired."""
    from lpo_speech.tts.pairs import select_pairs
    from lpo_speech.tts.recipe import TtsBuildPairs

    def cand(i, emo, cer):
        return {"id": f"p/sample{i}", "prompt_id": "p", "source": "sample", "tokens": [300 + i] * 4, "terminated": True,
                "scores": {"cer": cer, "wer": cer, "emotion": emo, "emotion_top": "high" if emo > 0.5 else "neutral",
                           "failure": cer > 0.5, "duration_s": 1.0, "hyp": ""}}

    row = {"id": "p", "text": "t", "emotion": "high", "prompt_tokens": [1, 40, 3],
           "candidates": [cand(0, 0.9, 0.2), cand(1, 0.1, 0.3), cand(2, 0.2, 0.0), cand(3, 0.85, 0.1)]}
    bp = TtsBuildPairs(prompts="p.jsonl", work_dir="w", keys=["failure", "emotion", "cer"], max_chosen_cer=0.3,
                       min_margins={"emotion": 0.3}, max_chosen_deficit={"cer": 0.1}, pairs_per_prompt=3,
                       similarity=False, emotion={"type": "prosody", "path": "c.json"})
    bp.validate()
    pairs, st = select_pairs(bp, [row])
    assert [p.id for p in pairs] == ["p/sample1"]  # sample2 is 0.2 CER clearer than the chosen: not paired
    assert st["trades_off"] == 1 and st["within_margin"] == 1  # sample3 is as emotional as the chosen
    assert pairs[0].chosen_scores["emotion"] == 0.9 and pairs[0].extra["emotion"] == "high"
    # The most emotional candidate over the CER ceiling is passed over, not the whole prompt.
    row["candidates"].append(cand(4, 0.99, 0.8))
    pairs, st = select_pairs(bp, [row])
    assert [p.id for p in pairs] == ["p/sample1"] and pairs[0].chosen_scores["emotion"] == 0.9
    with pytest.raises(ValueError, match="build_pairs.emotion"):
        TtsBuildPairs(prompts="p.jsonl", work_dir="w", keys=["emotion"], similarity=False).validate()
