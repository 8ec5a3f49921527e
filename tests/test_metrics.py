"""Normalization and WER/CER against hand-worked numbers."""

from __future__ import annotations

import pytest

from lpo_speech.errors import UserError
from lpo_speech.metrics import corpus_scores, normalize, utterance_errors


@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("  It's   DON'T\tstop. ", "it's don't stop"),
    ("It\u2019s o\u2019clock", "it's o'clock"),          # typographic apostrophe
    ("'Quoted' the students' books", "quoted the students books"),  # quote marks at word edges
    ("well-known (mostly); yes?", "well known mostly yes"),
    ("Pay 3.50 for 1,000 items.", "pay 3.50 for 1,000 items"),  # numbers left as is
    ("...", ""),
])
def test_normalize_english(text, expected):
    assert normalize(text) == expected


def test_normalize_chinese_per_character():
    assert normalize("你好， 世界！", "zh") == "你 好 世 界"
    assert normalize("今天 天气。", "cjk") == "今 天 天 气"


def test_unknown_language_is_user_error():
    with pytest.raises(UserError, match="unsupported language 'fr'"):
        normalize("bonjour", "fr")


def test_wer_cer_hand_worked():
    # words: sat->sit (1 substitution), second "the" deleted: 2 errors / 6 words.
    # chars: "the cat sat on the mat" (22) -> "the cat sit on mat": a->i plus "the " deleted = 5.
    u = utterance_errors("The cat sat on the mat.", "the cat sit on mat", "en")
    assert u["errors"] == 2 and u["ref_words"] == 6
    assert u["wer"] == pytest.approx(2 / 6)
    assert u["cer"] == pytest.approx(5 / 22)


def test_insertion_and_exact_match():
    assert utterance_errors("a b", "a x b")["wer"] == pytest.approx(0.5)
    assert utterance_errors("Don't STOP!", "don't stop")["wer"] == 0.0  # case/punctuation are free


def test_chinese_wer_equals_cer():
    u = utterance_errors("今天天气很好", "今天天气真好。", "zh")
    assert u["wer"] == pytest.approx(1 / 6) and u["cer"] == pytest.approx(1 / 6) and u["ref_words"] == 6


def test_empty_reference_and_hypothesis_rules():
    assert utterance_errors("", "")["wer"] == 0.0
    assert utterance_errors("?!", "")["wer"] == 0.0  # punctuation-only normalizes to empty
    u = utterance_errors("", "hello there")
    assert u["wer"] == 1.0 and u["errors"] == 2 and u["ref_words"] == 0
    assert utterance_errors("one two three", "")["wer"] == 1.0


def test_corpus_wer_differs_from_utterance_mean():
    refs = ["a b c d e f g h i j", "hello world"]
    hyps = ["a b c d e f g h i j", "hello"]
    s = corpus_scores(refs, hyps)
    assert s["n"] == 2
    assert s["wer"] == pytest.approx(1 / 12)          # 1 deletion over 12 reference words
    assert s["wer_utt_mean"] == pytest.approx(0.25)   # (0 + 1/2) / 2
    assert s["cer"] == pytest.approx(6 / 30)          # " world" = 6 chars of 19 + 11


def test_corpus_empty_and_length_mismatch():
    assert corpus_scores([], []) == {"wer": 0.0, "cer": 0.0, "wer_utt_mean": 0.0, "n": 0}
    with pytest.raises(ValueError):
        corpus_scores(["a"], [])
