"""Online training of Whisper with a WER reward: GRPO and online LPO sample from the model being
trained (real tiny.en weights), score against the references and update it."""

from __future__ import annotations

import json
from pathlib import Path

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


@pytest.mark.slow
def test_online_whisper_under_ddp_and_fsdp_matches_one_process(tmp_path, whisper_tiny, asr_data):
    """`torchrun --nproc_per_node 2` online pairs for Whisper (its encoder frozen, as the recipe says):
    under DDP each process samples its share of the prompts; one process given those same candidates
    (its samples files, as a resumed run reuses them) trains to the same losses. Under FSDP (the frozen
    encoder whole on each process, the decoder sharded and gathered for sampling) the first step's
    draw is DDP's, and given DDP's second draw it trains to the same losses too."""
    import os
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    args = [f"model.path={whisper_tiny}", f"build_pairs.manifest={asr_data / 'train.jsonl'}", "online.algorithm=pairs",
            "online.prompts_per_step=4", "online.samples=3", "online.temperature=1.5", "train.max_steps=2",
            "train.batch_size=1", "train.log_every=1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def torchrun(out: str, *extra: str, port: int) -> None:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                               str(port), "-m", "lpo_speech.cli", "train", str(RECIPE), f"train.out_dir={tmp_path / out}",
                               *args, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def draw(run: str, step: int, rank: int) -> Path:
        return tmp_path / run / "samples" / f"step-{step:06d}.rank{rank}.jsonl"

    torchrun("ddp", port=29571)
    for step in range(2):  # position k of a step went to rank k % 2
        shares = [draw("ddp", step, r).read_text().splitlines() for r in (0, 1)]
        merged = [shares[k % 2][k // 2] for k in range(4)]
        draw("one", step, 0).parent.mkdir(parents=True, exist_ok=True)
        draw("one", step, 0).write_text("\n".join(merged) + "\n")
    subprocess.run([sys.executable, "-m", "lpo_speech.cli", "train", str(RECIPE), f"train.out_dir={tmp_path / 'one'}", *args],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    for r in (0, 1):  # FSDP draws step 0 itself and is handed DDP's step 1
        draw("fsdp", 1, r).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(draw("ddp", 1, r), draw("fsdp", 1, r))
    torchrun("fsdp", "train.strategy=fsdp", port=29572)
    assert all(draw("fsdp", 0, r).read_text() == draw("ddp", 0, r).read_text() for r in (0, 1))
    one, two, fsdp = ([json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                      for run in ("one", "ddp", "fsdp"))
    assert any(r["pairs"] > 0 for r in one)  # sampled transcripts differ in WER: there is a signal
    for key in ("loss", "x1", "x2", "pairs", "grad_norm", "reward"):
        assert [r[key] for r in one] == pytest.approx([r[key] for r in two], rel=1e-4, abs=1e-5), key
        assert [r[key] for r in one] == pytest.approx([r[key] for r in fsdp], rel=1e-4, abs=1e-5), key
    runtime = json.loads((tmp_path / "fsdp" / "runtime.json").read_text())
    assert runtime["fsdp_unsharded"].startswith("WhisperEncoder (frozen)")
