"""Perturbation-based rejected transcripts."""

import random

from lpo_speech.perturb import build_vocabulary, perturb, perturbations
from lpo_speech.wer import normalize, utterance_errors

REFS = ["Please turn the kitchen lights off.", "The farmer dances behind the restaurant twice a week."]


def test_vocabulary_from_normalized_references():
    vocab = build_vocabulary(REFS)
    assert vocab[0] == "the" and "kitchen" in vocab and "off." not in vocab


def test_edits_change_the_text_by_about_the_rate():
    vocab = build_vocabulary(REFS)
    rng = random.Random(0)
    ref = REFS[1]
    wers = [utterance_errors(ref, perturb(ref, vocab, rng, rate=0.2))["wer"] for _ in range(50)]
    assert 0.05 < sum(wers) / len(wers) < 0.5  # 2 edits on 9 words; some edits cancel or repeat


def test_perturbations_distinct_deterministic_and_wrong():
    vocab = build_vocabulary(REFS)
    a = perturbations(REFS[0], vocab, n=4, rate=0.15, seed="x")
    assert a == perturbations(REFS[0], vocab, n=4, rate=0.15, seed="x")
    assert len(a) == 4 and len({normalize(t) for t in a}) == 4
    assert all(utterance_errors(REFS[0], t)["wer"] > 0 for t in a)


def test_chinese_edits_characters():
    vocab = build_vocabulary(["今天天气很好", "我们去公园"], lang="zh")
    out = perturbations("今天天气很好", vocab, n=3, rate=0.2, seed=1, lang="zh")
    assert out and all(" " not in t for t in out)
    assert all(utterance_errors("今天天气很好", t, "zh")["cer"] > 0 for t in out)
