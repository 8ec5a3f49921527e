"""The paired statistics `eval` reports for each model against the baseline (lpo_speech.stats,
lpo_speech.evaluate.paired_change), checked on examples small enough to work out by hand, and the
cells and notes of the table that show them."""

from __future__ import annotations

import pytest

from lpo_speech.evaluate import change_cell, comparison_table, eval_table, paired_change
from lpo_speech.stats import paired_bootstrap, sign_test_p


def test_sign_test_by_hand():
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(3, 3) == 1.0
    assert sign_test_p(0, 5) == pytest.approx(2 / 32)               # both tails of 1/2^5
    assert sign_test_p(9, 1) == pytest.approx(2 * (1 + 10) / 1024)  # P(X <= 1) for X ~ Bin(10, 1/2), doubled
    assert sign_test_p(0, 1) == 1.0                                 # one differing item says nothing


def test_paired_bootstrap_by_hand():
    # The same errors everywhere: no change, and no resample can make one.
    assert paired_bootstrap([2, 0, 1], [2, 0, 1], [5, 4, 3]) == (0.0, 0.0, 0.0)
    # One more error on each of 4 ten-word utterances: every resample moves WER by exactly 4/40.
    assert paired_bootstrap([0] * 4, [1] * 4, [10] * 4) == pytest.approx((0.1, 0.1, 0.1))
    # Two utterances: +2 errors on the 10-word one, none on the 5-word one. The change is 2/15; a
    # resample is both the first (4/20 = 0.2, chance 1/4), both the second (0, chance 1/4) or one of
    # each (2/15): with 1/4 of the resamples at each end, the 2.5% and 97.5% quantiles are 0 and 0.2.
    assert paired_bootstrap([0, 0], [2, 0], [10, 5]) == pytest.approx((2 / 15, 0.0, 0.2))
    # Sizes default to 1: a share, such as a failure rate.
    assert paired_bootstrap([1, 1, 0, 0], [0, 0, 0, 0]) == pytest.approx((-0.5, -1.0, 0.0))
    # Deterministic: the fixed seed gives the same interval on every call.
    a, b, w = [3, 0, 1, 2, 0, 5] * 8, [2, 1, 1, 2, 0, 3] * 8, [7, 4, 5, 9, 3, 12] * 8
    assert paired_bootstrap(a, b, w) == paired_bootstrap(a, b, w)
    assert paired_bootstrap([], [], []) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap([1], [1, 2])


def _asr(rows):
    return [{"id": f"u{i}", "ref": ref, "hyp": hyp} for i, (ref, hyp) in enumerate(rows)]


def test_paired_change_equal_models_is_no_change():
    rows = _asr([("turn the lights off", "turn the light off"), ("good morning", "good morning")])
    vs = paired_change(rows, rows)
    assert vs["delta_wer"] == 0.0 and vs["ci95"] == [0.0, 0.0] and vs["p_sign"] == 1.0
    assert vs["verdict"] == "within noise" and vs["errors"] == 0 and vs["better"] == vs["worse"] == 0
    assert vs["n"] == 2 and vs["words"] == 6 and vs["metric"] == "wer"
    assert change_cell(vs) == "0 errors, +0.0000 [+0.0000, +0.0000]: within noise (2 utterances)"


def test_paired_change_better_on_every_utterance():
    # 6 utterances of 4 words; the baseline gets one word wrong on each, the other none.
    refs = ["one two three four"] * 6
    base = _asr([(r, "one two three for") for r in refs])
    better = _asr([(r, r) for r in refs])
    vs = paired_change(base, better)
    assert vs["errors"] == -6 and vs["delta_wer"] == pytest.approx(-6 / 24)
    assert vs["ci95"] == pytest.approx([-0.25, -0.25])   # every resample: one error fewer in 4 words
    assert vs["better"] == 6 and vs["worse"] == 0
    assert vs["p_sign"] == pytest.approx(2 / 2 ** 6)     # both tails of Bin(6, 1/2) at 0 and 6
    assert vs["verdict"] == "better"
    assert change_cell(vs) == "-6 errors, -0.2500 [-0.2500, -0.2500]: better (6 utterances)"
    assert paired_change(better, base)["verdict"] == "worse"


def test_three_errors_worse_on_178_words_reads_as_noise():
    """The user's case: 48 utterances, 178 words, the trained model 3 errors worse than the base
    (worse on 5 utterances, better on 2): the interval includes 0, and the table says so."""
    refs = [" ".join(["word"] * (4 if i < 34 else 3)) for i in range(48)]   # 34 x 4 + 14 x 3 = 178 words
    base = _asr([(r, r) if i not in (0, 1) else (r, r.replace("word", "bird", 1)) for i, r in enumerate(refs)])
    other = _asr([(r, r.replace("word", "bird", 1)) if i in (2, 3, 4, 5, 6) else (r, r)
                  for i, r in enumerate(refs)])
    vs = paired_change(base, other)
    assert vs["words"] == 178 and vs["errors"] == 3 and vs["delta_wer"] == pytest.approx(3 / 178)
    assert vs["worse"] == 5 and vs["better"] == 2
    assert vs["p_sign"] == pytest.approx(2 * (1 + 7 + 21) / 2 ** 7)  # P(X <= 2) for X ~ Bin(7, 1/2), doubled
    lo, hi = vs["ci95"]
    assert lo < 0 < hi and vs["verdict"] == "within noise"
    assert paired_change(base, other) == vs  # the fixed seed: the same interval every run
    cell = change_cell(vs)
    assert cell.startswith("+3 errors, +0.0169 [") and cell.endswith("]: within noise (48 utterances)")


def test_paired_change_of_tts_rows_adds_failures_and_cer_for_chinese():
    base = [{"id": "a", "text": "今天天气很好", "hyp": "今天天气很好", "failure": False},
            {"id": "b", "text": "我爱北京", "hyp": "我很爱北京", "failure": True}]
    other = [{"id": "a", "text": "今天天气很好", "hyp": "今天天汽很好", "failure": True},
             {"id": "b", "text": "我爱北京", "hyp": "我爱北京", "failure": False}]
    vs = paired_change(base, other, "zh")
    assert vs["metric"] == "cer" and vs["chars"] == 10 and vs["errors"] == 0 and vs["delta_cer"] == 0.0
    assert vs["better"] == vs["worse"] == 1 and vs["p_sign"] == 1.0
    f = vs["failure"]
    assert f["delta"] == 0.0 and f["new"] == 1 and f["fixed"] == 1 and f["p_sign"] == 1.0
    # a fails only here (+1), b only in the baseline (-1): a resample is +1 (a twice), -1 (b twice) or 0
    assert f["ci95"] == pytest.approx([-1.0, 1.0]) and f["verdict"] == "within noise"
    with pytest.raises(ValueError, match="same utterances"):
        paired_change(base, other[::-1], "zh")


def test_the_tables_name_the_set_and_show_the_interval():
    rows = _asr([("a b c d e", "a b c d e"), ("f g h i j", "f g h i j")])
    worse = _asr([("a b c d e", "a b c d x"), ("f g h i j", "f g h i j")])
    vs = paired_change(rows, worse)
    res = {"base": {"wer": 0.0, "cer": 0.0, "n": 2, "words": 10},
           "lpo": {"wer": 0.1, "cer": 0.02, "n": 2, "words": 10, "vs_base": vs}}
    table = eval_table(res, "en", "base", "data/test.jsonl", "test").splitlines()
    assert table[0] == "| model | wer | cer | n | vs base |"
    assert table[2] == "| base | 0.0000 | 0.0000 | 2 | baseline |"
    assert table[3] == "| lpo | 0.1000 | 0.0200 | 2 | +1 error, +0.1000 [+0.0000, +0.2000]: within noise (2 utterances) |"
    assert table[5].startswith("test (`data/test.jsonl`): 2 utterances, 10 words. `vs base`: ")
    assert "95% paired-bootstrap interval (2000 resamples" in table[5]
    one = eval_table({"base": res["base"]}, "en", "base", "data/test.jsonl").splitlines()
    assert one[0] == "| model | wer | cer | n |" and one[-1] == "`data/test.jsonl`: 2 utterances, 10 words."
    both = comparison_table({"in": res, "ood": res}, "base").splitlines()
    assert both[0] == "| model | in wer | in vs base | ood wer | ood vs base |"
    assert both[2] == "| base | 0.0000 | baseline | 0.0000 | baseline |"
    assert both[3] == ("| lpo | 0.1000 | +1 error, +0.1000 [+0.0000, +0.2000]: within noise (2 utterances) "
                       "| 0.1000 | +1 error, +0.1000 [+0.0000, +0.2000]: within noise (2 utterances) |")


def test_the_tts_tables_add_the_failure_change():
    base = [{"id": "a", "text": "the red lamp", "hyp": "the red lamp", "failure": False},
            {"id": "b", "text": "a quiet garden", "hyp": "", "failure": True}]
    fixed = [dict(base[0]), {**base[1], "hyp": "a quiet garden", "failure": False}]
    vs = paired_change(base, fixed)
    assert vs["errors"] == -3 and vs["failure"]["fixed"] == 1 and vs["failure"]["delta"] == -0.5
    res = {"sft": {"wer": 0.5, "failure_rate": 0.5, "n": 2, "words": 6},
           "lpo": {"wer": 0.0, "failure_rate": 0.0, "n": 2, "words": 6, "vs_sft": vs}}
    rows = comparison_table({"dev": res}, "sft").splitlines()
    assert rows[0] == "| model | dev wer | dev vs sft | dev failure |"
    assert rows[2] == "| sft | 0.5000 | baseline | 0.500 |"
    assert rows[3] == ("| lpo | 0.0000 | -3 errors, -0.5000 [-1.0000, +0.0000]: within noise (2 prompts) "
                       "| 0.000 (-0.500 [-1.000, +0.000]) |")
    table = eval_table(res, "en", "sft", "p.jsonl").splitlines()
    assert table[0] == "| model | wer | failure_rate | n | vs sft | failure vs sft |"
    assert table[-1].startswith("`p.jsonl`: 2 prompts, 6 words. `vs sft`: each model against sft on the same prompts")
