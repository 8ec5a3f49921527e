"""Normalization and WER/CER against hand-worked numbers."""

from __future__ import annotations

import pytest

from lpo_speech.errors import UserError
from lpo_speech.wer import corpus_scores, headline, normalize, utterance_errors


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


def test_chinese_cer_hand_worked():
    # 气 -> 汽: 1 substitution over 6 reference characters.
    u = utterance_errors("今天天气很好", "今天天汽很好", "zh")
    assert (u["char_errors"], u["ref_chars"]) == (1, 6) and u["cer"] == pytest.approx(1 / 6)
    # The same sentence in traditional characters (氣) is the same text once simplified: CER 0.
    assert utterance_errors("今天天气很好", "今天天氣很好", "zh")["cer"] == 0.0
    assert normalize("頭髮很乾", "zh") == "头 发 很 干"
    # Only zh is converted: ja / cjk keep characters as written, so 氣 vs 气 is one substitution.
    assert utterance_errors("今天天气很好", "今天天氣很好", "ja")["cer"] == pytest.approx(1 / 6)
    # Full-width punctuation is dropped and full-width digits/letters fold to half-width (NFKC):
    # 今天天气很好温度25度 vs the same, 11 characters (2 and 5 count one each), 0 errors.
    assert normalize("今天天气很好，温度２５度。ＯＫ！", "zh") == "今 天 天 气 很 好 温 度 2 5 度 o k"
    u = utterance_errors("今天天气很好，温度２５度。", "今天天气很好, 温度25度", "zh")
    assert u["cer"] == 0.0 and u["ref_chars"] == 11
    # Insertion: 我爱北京 -> 我很爱北京, 1 inserted character over 4.
    u = utterance_errors("我爱北京", "我很爱北京", "zh")
    assert u["char_errors"] == 1 and u["cer"] == pytest.approx(1 / 4)
    # Deletion: 我爱北京天安门 -> 我爱北京门, 天 and 安 deleted: 2 over 7.
    u = utterance_errors("我爱北京天安门", "我爱北京门", "zh")
    assert u["char_errors"] == 2 and u["cer"] == pytest.approx(2 / 7)


def test_chinese_corpus_pools_characters():
    # (1 substitution + 1 insertion) over (6 + 4) reference characters = 0.2; the per-utterance
    # mean weighs the short one as much: (1/6 + 1/4) / 2 = 5/24.
    s = corpus_scores(["今天天气很好", "我爱北京"], ["今天天汽很好", "我很爱北京"], "zh")
    assert s["cer"] == pytest.approx(0.2) and s["wer"] == pytest.approx(0.2)
    assert s["wer_utt_mean"] == pytest.approx(5 / 24) and s["n"] == 2


def test_chinese_under_english_rules_is_one_word():
    # Unsegmented Chinese has no spaces: under en the sentence is one word, so one wrong
    # character is WER 1.0 (the CER is still 1/6). The headline rate of zh is the CER.
    u = utterance_errors("今天天气很好", "今天天汽很好", "en")
    assert u["ref_words"] == 1 and u["wer"] == 1.0 and u["cer"] == pytest.approx(1 / 6)
    assert [headline(x) for x in ("zh", "cjk", "ja", "en")] == ["cer", "cer", "cer", "wer"]


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
