"""Online training of Whisper with a WER reward: GRPO and online LPO sample from the model being
trained (real tiny.en weights), score against the references and update it."""

from __future__ import annotations

import json

import pytest

from conftest import REPO

RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-online.yaml"


@pytest.fixture(scope="module")
def asr_data(tmp_path_factory):
    from lpo_speech.synthetic.synth import make_asr_data

    out = tmp_path_factory.mktemp("asr-online") / "data"
    make_asr_data(out, n_train=4, n_test=0, styles=["espeak"], workers=1, progress=False)
    return out


def test_online_whisper_grpo(tmp_path, lpo, whisper_tiny, asr_data):
    """(Online pairs share every step but the loss with GRPO; tests/tts/test_online.py runs both.)"""
    algorithm = "grpo"
    lpo("train", str(RECIPE), f"model.path={whisper_tiny}", f"build_pairs.manifest={asr_data / 'train.jsonl'}",
        f"train.out_dir={tmp_path / 'run'}", f"online.algorithm={algorithm}", "online.prompts_per_step=2",
        "online.samples=3", "train.max_steps=2", "--quiet", cwd=tmp_path)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= r["term_wer"] <= 1.0 and r["reward"] == pytest.approx(r["term_wer"])
    batch = [json.loads(l) for l in (tmp_path / "run" / "samples" / "step-000000.rank0.jsonl").read_text().splitlines()]
    refs = {json.loads(l)["id"]: json.loads(l)["text"] for l in (asr_data / "train.jsonl").read_text().splitlines()}
    for b in batch:  # real transcripts of the espeak audio, scored against its reference
        assert b["id"] in refs and len(b["candidates"]) == 3
        assert any(c["scores"]["wer"] < 1.0 for c in b["candidates"])
    from transformers import WhisperForConditionalGeneration

    WhisperForConditionalGeneration.from_pretrained(tmp_path / "run" / "model")


def test_asr_reward_terms_are_checked(tmp_path, lpo, whisper_tiny, asr_data):
    res = lpo("train", str(RECIPE), f"model.path={whisper_tiny}", f"build_pairs.manifest={asr_data / 'train.jsonl'}",
              f"train.out_dir={tmp_path / 'run'}", "online.rewards={sim: 1.0}", cwd=tmp_path, check=False)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == (
        "error: online.rewards: the ASR track scores transcripts: reward terms wer and cer only, not sim")
    res = lpo("train", str(RECIPE), f"model.path={whisper_tiny}", f"build_pairs.manifest={asr_data / 'train.jsonl'}",
              f"train.out_dir={tmp_path / 'run'}", "online.judge_workers=2", cwd=tmp_path, check=False)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith(
        "error: online.judge_workers: the ASR track's rewards are WER/CER of the sampled text")
