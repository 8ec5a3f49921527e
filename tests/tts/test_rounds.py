"""`rounds:` in one `lpo-speech train`: each round samples its own prompts from the previous round's
model, stores reference log-probs of the round's start (or of the SFT model), and trains from there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_recipe(tmp_path: Path, world: Path, model: Path, reference: str) -> Path:
    path = tmp_path / f"rounds-{reference}.yaml"
    path.write_text(f"""
track: tts
model: {{path: {model}, adapter: causal_lm, num_codebooks: 4}}
data: {{pairs: {tmp_path}/unused.jsonl, max_length: 512}}
build_pairs: {{prompts: {world}/train_prompts.jsonl, gold: {world}/train.jsonl, work_dir: {tmp_path}/unused,
  judge: null, keys: [], min_margins: {{}}, max_chosen_cer: null, chosen_stable: false, similarity: false,
  chosen: gold, samples: 2, max_seconds: 0.6, pairs_per_prompt: 2}}
rounds: {{n: 2, prompts_per_round: 1, reference: {reference}}}
loss: {{type: lpo-ste}}
train: {{out_dir: {tmp_path}/run-{reference}, lr: 1.0e-2, max_steps: 2, batch_size: 2, log_every: 1, warmup_steps: 0}}
runtime: {{device: cpu, sampling_threads: 1, threads: 1}}
""")
    return path


def lines(p: Path) -> list[dict]:
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]


@pytest.mark.parametrize("reference", ["round_start", "sft"])
def test_two_rounds(reference, tmp_path, lpo, tts_world, tts_model):
    world, _ = tts_world
    lpo("train", str(write_recipe(tmp_path, world, tts_model, reference)), "--quiet", cwd=tmp_path)
    run = tmp_path / f"run-{reference}"
    summary = json.loads((run / "rounds.json").read_text())
    assert [s["round"] for s in summary] == [1, 2]
    assert summary[0]["start_model"] == str(tts_model) and summary[1]["start_model"] == str(run / "round-1" / "train" / "model")
    assert [lines(run / f"round-{k}" / "prompts.jsonl")[0]["id"] for k in (1, 2)] == ["train-00000", "train-00001"]
    # round 2 sampled from round 1's model (its candidates record that model by content)
    settings = json.loads((run / "round-2" / "pairs" / "candidates.jsonl.settings.json").read_text())
    assert settings["model"]["path"].endswith("round-1/train/model")
    metrics = lines(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and [m["round"] for m in metrics] == [1, 1, 2, 2]
    # the reference of round 2: its own start (x1 = 0 at its first step) or the SFT model (x1 != 0)
    x1 = metrics[2]["x1"]
    assert (abs(x1) < 1e-5) if reference == "round_start" else (abs(x1) > 1e-4)
    assert summary[1]["reference"] == (summary[1]["start_model"] if reference == "round_start" else str(tts_model))
    assert (run / "model" / "model.safetensors").read_bytes() == (
        run / "round-2" / "train" / "model" / "model.safetensors").read_bytes()
    assert (run / "training_curves.png").is_file()
    if reference == "sft":
        return  # the rerun rules are the same for both references
    again = lpo("train", str(write_recipe(tmp_path, world, tts_model, reference)), cwd=tmp_path, check=False)
    assert again.returncode == 2 and "holds rounds of an earlier run; pass --resume" in again.stderr
    lpo("train", str(write_recipe(tmp_path, world, tts_model, reference)), "--resume", "--quiet", cwd=tmp_path)
    assert lines(run / "metrics.jsonl") == metrics  # every round was done: nothing ran again
