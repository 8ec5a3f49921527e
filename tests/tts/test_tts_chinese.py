"""Chinese TTS end to end on a tiny path: candidates scored by character, pairs kept, eval led by CER.

No offline Chinese ASR exists (the bundled Whisper is tiny.en; Paraformer-zh is a hub download), so
these tests use a stand-in judge that returns given Chinese transcripts. The speech is real:
espeak-ng's Mandarin voice, so the stability flags (VAD, speaking-rate bounds) run on audio.
"""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from conftest import espeak_wav
from lpo_speech.errors import UserError
from lpo_speech.tts.scoring import Clip, TtsScorer, summarize
from lpo_speech.tts.text import CODEC_OFFSET

TEXT = "今天天气很好"  # 6 characters; under English rules one word
HYPS = [
    "今天天氣很好！",  # traditional 氣, full-width punctuation: CER 0 once normalized
    "今天天汽很好",    # 气 -> 汽: 1 substitution / 6
    "今天天气",        # 很好 deleted: 2 / 6
    "明天下雨",        # 3 substitutions + 2 deletions: 5 / 6, a failure (> 0.5)
]


class StandInJudge:
    """Returns the given transcripts in order: a stand-in, because no offline Chinese ASR exists."""

    def __init__(self, hyps: list[str]):
        self.hyps = list(hyps)

    def transcribe(self, wavs, sr):
        return [self.hyps.pop(0) for _ in wavs]


class StandInScorer(TtsScorer):
    """TtsScorer with the stand-in judge in place of the recipe's (everything else is the real scorer)."""

    def __init__(self, hyps: list[str], **kw):
        super().__init__(**kw)
        self.stand_in = StandInJudge(hyps)

    def asr_judge(self):
        return self.stand_in


@pytest.fixture(scope="module")
def mandarin(tmp_path_factory):
    path = espeak_wav(tmp_path_factory.mktemp("zh") / "zh.wav", TEXT, voice="cmn")
    wav, sr = sf.read(str(path), dtype="float32")
    return wav, sr


def _bp(**kw):
    from lpo_speech.tts.recipe import TtsBuildPairs

    bp = TtsBuildPairs(prompts="p.jsonl", work_dir="w", judge={"type": "funasr", "model": "paraformer-zh"},
                       similarity=False, keys=["failure", "cer"], min_margins={"cer": 0.1}, max_chosen_cer=0.3,
                       pairs_per_prompt=3, **kw)
    bp.validate()
    return bp


def _row(scores: list[dict]) -> dict:
    return {"id": "p", "text": TEXT, "prompt_tokens": [1, 40, 3], "candidates": [
        {"id": f"p/sample{k}", "prompt_id": "p", "source": "sample", "tokens": [CODEC_OFFSET + k] * 4,
         "terminated": True, "scores": s} for k, s in enumerate(scores)]}


def test_chinese_pair_build_scores_by_character_and_keeps_pairs(mandarin):
    from lpo_speech.tts.pairs import candidate_scorer, select_pairs

    wav, sr = mandarin
    assert 2.0 < wav.size / sr < 4.0  # espeak's Mandarin: ~2 characters/s
    bp = _bp(lang="zh")
    real = candidate_scorer(bp)  # build-pairs' scorer carries the recipe's language
    assert isinstance(real, TtsScorer) and real.lang == "zh"
    scorer = StandInScorer(HYPS, judge=real.judge, similarity=real.similarity, dnsmos=real.dnsmos, lang=real.lang)
    rows = scorer.score([Clip(TEXT, wav, sr) for _ in HYPS])
    assert [r["cer"] for r in rows] == pytest.approx([0.0, 1 / 6, 2 / 6, 5 / 6])
    assert [r["wer"] for r in rows] == [r["cer"] for r in rows]  # one token per character
    assert [r["failure"] for r in rows] == [False, False, False, True]
    # Timed per character (1.5-10 characters/s): 6 characters may last 0.6 to 6 / 1.5 + 0.75 = 4.75 s.
    assert not any(r["duration_out_of_range"] or r["no_speech"] for r in rows)
    pairs, st = select_pairs(bp, [_row(rows)])
    assert [p.id for p in pairs] == ["p/sample3", "p/sample2", "p/sample1"] and st["pairs"] == 3
    assert all(p.chosen_scores["cer"] < p.rejected_scores["cer"] for p in pairs)
    assert pairs[0].chosen_scores["hyp"] == "今天天氣很好！"

    # The same transcripts under English rules: the sentence is one word, so every transcript with
    # any error (the traditional 氣 is one too) has WER 1.0 and is a failure, and 6 letters may last
    # at most 6 / 4 + 0.75 = 2.25 s: no candidate can be the chosen, no pair is kept.
    english = StandInScorer(HYPS, judge=real.judge, similarity=False, dnsmos=False, lang="en")
    rows_en = english.score([Clip(TEXT, wav, sr) for _ in HYPS])
    assert [r["wer"] for r in rows_en] == [1.0] * 4 and all(r["failure"] for r in rows_en)
    assert [r["cer"] for r in rows_en] == pytest.approx([1 / 6, 1 / 6, 2 / 6, 5 / 6])
    assert all(r["duration_out_of_range"] for r in rows_en)
    pairs, st = select_pairs(_bp(lang="en"), [_row(rows_en)])
    assert pairs == [] and st["chosen_unstable"] == 1


def test_chinese_summary_counts_characters():
    def row(hyp):
        return {"hyp": hyp, "failure": False, "terminated": True, "undecodable": False, "duration_s": 1.0}

    # 6 + 13 = 19 characters for 6: more than 3x, a judge loop; 18 (exactly 3x) is not.
    looped, thrice = row(TEXT + "哈" * 13), row(TEXT * 3)
    m = summarize([looped, thrice, row("今天天汽很好")], [TEXT] * 3, "zh")
    assert m["runaway_rate"] == pytest.approx(1 / 3)
    assert m["cer"] == pytest.approx((13 + 12 + 1) / 18) and m["wer"] == m["cer"]
    assert m["wer_no_runaway"] == pytest.approx((12 + 1) / 12)
    # Under English rules each transcript is one word against one: no loop is seen.
    assert summarize([looped], [TEXT], "en")["runaway_rate"] == 0.0


def test_whisper_judges_are_told_chinese():
    def judge(spec, lang):
        return TtsScorer(judge=spec, lang=lang).asr_judge()

    assert judge({"type": "faster-whisper", "model": "large-v3"}, "zh").language == "zh"
    assert judge({"type": "transformers-whisper", "path": "w"}, "zh").language == "zh"
    assert judge({"type": "faster-whisper", "model": "large-v3"}, "en").language is None  # as configured
    assert judge({"type": "transformers-whisper", "path": "w", "language": "en"}, "en").language == "en"


def test_eval_leads_with_cer_for_chinese(tmp_path, lpo):
    from lpo_speech.evaluate import markdown_table
    from lpo_speech.tts.evaluate import check_tts_eval

    m = {"wer": 0.2, "cer": 0.2, "wer_utt_mean": 0.25, "n": 2}
    assert markdown_table({"a": m}, "zh").splitlines()[0] == "| model | cer | wer | wer_utt_mean | n |"
    assert markdown_table({"a": m}).splitlines()[0] == "| model | wer | cer | wer_utt_mean | n |"
    with pytest.raises(UserError, match="--lang zh: the default judge, the bundled Whisper tiny.en"):
        check_tts_eval("m", "p.jsonl", tmp_path, lang="zh")
    # The flag reaches the TTS eval from the command line (a model folder is a TTS model by config.json).
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"tts": {}}))
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "x", "text": TEXT}, ensure_ascii=False) + "\n")
    ev = ["eval", "--wer", "--model", "m", "--data", "p.jsonl", "--out", "o", "--lang", "zh"]
    r = lpo(*ev, cwd=tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--judge funasr:paraformer-zh" in r.stderr, r.stderr
    r = lpo(*ev, "--judge", "paraformer-zh", cwd=tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "expected faster-whisper:MODEL" in r.stderr, r.stderr
