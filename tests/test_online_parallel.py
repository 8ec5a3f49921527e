"""Online training under torchrun (gloo, CPU): GRPO and online pairs under DDP and FSDP give the losses
of one process for the same global batch, with prompts split unevenly and micro-batched; sampling under
FSDP (weights gathered) draws what DDP draws; more processes than prompts per step is one line.

The same global batch: each run reuses the candidates of `samples/step-N.rankR.jsonl` when the file is
there (as a resumed run does), so the tests write one step's candidates (varied rewards, so advantages
and best-vs-worst pairs are not all zero) and split them over the ranks the way the loop splits prompts
(position k of the step goes to rank k % world). Sampling itself is compared in its own test.
The multi-process runs take a while on 2 cores, hence `slow` (CI runs them)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

TOL = dict(rel=1e-4, abs=1e-5)
PROMPTS, SAMPLES, STEPS = 4, 3, 3


def write_recipe(tmp_path: Path, world: Path, model: Path, algorithm: str) -> Path:
    path = tmp_path / f"{algorithm}.yaml"
    path.write_text(f"""
track: tts
model: {{path: {model}, adapter: causal_lm, num_codebooks: 4}}
data: {{pairs: {tmp_path}/unused.jsonl, max_length: 512}}
build_pairs: {{prompts: {world}/ood_dev_prompts.jsonl, work_dir: {tmp_path}/unused, judge: null, keys: [],
  min_margins: {{}}, max_chosen_cer: null, chosen_stable: false, similarity: false, chosen: gold, gold: {world}/train.jsonl,
  max_seconds: 0.6, batch_size: 8}}
online: {{algorithm: {algorithm}, prompts_per_step: {PROMPTS}, samples: {SAMPLES}, rewards: {{duration: 1.0}},
  min_reward_gap: 0.05}}
loss: {{type: lpo-ste, sft_weight: 0.1}}
reference: {{source: model}}
train: {{lr: 1.0e-3, max_steps: {STEPS}, batch_size: 2, log_every: 1, warmup_steps: 0, seed: 3}}
runtime: {{device: cpu, sampling_threads: 1, threads: 1}}
""")
    return path


def candidates(model: Path, step: int) -> list[list[dict]]:
    """One step's candidates, position by position: random codec tokens and rewards. Some groups have
    all-equal rewards (no pair past min_reward_gap, zero advantages) so some ranks get no pair."""
    layout = json.loads((model / "config.json").read_text())
    vocab, offset = layout["vocab_size"], layout["tts"]["layout"]["codec_offset"]
    rng = random.Random(step)
    groups = []
    for k in range(PROMPTS):
        flat = (step + k) % 3 == 0
        group = []
        for _ in range(SAMPLES):
            r = -0.5 if flat else round(rng.uniform(-1.5, 0.0), 3)
            group.append({"tokens": [rng.randrange(offset, vocab) for _ in range(rng.randint(4, 24))],
                          "terminated": rng.random() < 0.7, "scores": {"duration_s": 0.3}, "reward": r,
                          "terms": {"duration": r}})
        groups.append(group)
    return groups


def seed_samples(run: Path, model: Path, world: int) -> None:
    for step in range(STEPS):
        groups = candidates(model, step)
        for rank in range(world):
            path = run / "samples" / f"step-{step:06d}.rank{rank}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"id": f"p{k}", "candidates": g}) + "\n"
                                    for k, g in enumerate(groups) if k % world == rank))


def train(cwd: Path, recipe: Path, out: str, *args: str, nproc: int = 1, port: int = 0,
          check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(port)] if nproc > 1 else [sys.executable]) + ["-m", "lpo_speech.cli"]
    proc = subprocess.run([*launch, "train", str(recipe), f"train.out_dir={cwd / out}", *args, "--quiet"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


KEYS = {"grpo": ("loss", "pg", "logp", "grad_norm", "reward", "reward_best", "reward_worst"),
        "pairs": ("loss", "x1", "x2", "margin", "accuracy", "pairs", "grad_norm", "reward")}


LORA = "model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}"


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, runs, extra", [
    ("grpo", [("ddp", 2), ("fsdp", 2)], []),
    ("pairs", [("ddp", 2), ("fsdp", 3)], []),  # 3 processes: 4 prompts split 2/1/1, micro-batch counts differ
    ("pairs", [("fsdp", 2)], [LORA, "train.lr=3e-2"]),  # the reference: the policy with its adapter off
], ids=["grpo", "pairs", "pairs-lora"])
def test_online_under_ddp_and_fsdp_matches_one_process(algorithm, runs, extra, tmp_path, tts_world, tts_model):
    world, _ = tts_world
    recipe = write_recipe(tmp_path, world, tts_model, algorithm)
    seed_samples(tmp_path / "one", tts_model, 1)
    train(tmp_path, recipe, "one", *extra)
    one = rows(tmp_path / "one")
    assert [r["step"] for r in one] == list(range(1, STEPS + 1))
    assert all(r["grad_norm"] > 0 for r in one)  # the synthetic rewards give a signal every step
    if algorithm == "pairs":
        gaps = [[max(c["reward"] for c in g) - min(c["reward"] for c in g) for g in candidates(tts_model, s)]
                for s in range(STEPS)]
        assert [r["pairs"] for r in one] == [sum(gap > 0.05 for gap in step) for step in gaps]
        assert all(0 < r["pairs"] < PROMPTS for r in one)  # groups with all-equal rewards give no pair
    for i, (strategy, nproc) in enumerate(runs):
        out = f"{strategy}{nproc}"
        seed_samples(tmp_path / out, tts_model, nproc)
        train(tmp_path, recipe, out, f"train.strategy={strategy}", *extra, nproc=nproc, port=29561 + i)
        got = rows(tmp_path / out)
        for key in KEYS[algorithm]:
            assert [r[key] for r in got] == pytest.approx([r[key] for r in one], **TOL), (out, key)
        runtime = json.loads((tmp_path / out / "runtime.json").read_text())
        assert runtime["processes"] == nproc and runtime["strategy"] == strategy
        if strategy == "fsdp":  # the tiny codec LM's 2 decoder layers and the root
            assert runtime["fsdp_units"] == 3 and runtime["fsdp_largest_unit"].startswith("the root")


@pytest.mark.slow
def test_sampling_under_fsdp_draws_what_ddp_draws(tmp_path, tts_world, tts_model):
    """FSDP gathers the sharded weights for the sampler: the same seeds draw the same tokens as DDP's
    full replicas, rank by rank, and a 1-process FSDP run (a one-member group) samples too."""
    world, _ = tts_world
    recipe = write_recipe(tmp_path, world, tts_model, "grpo")
    for i, strategy in enumerate(("ddp", "fsdp")):
        train(tmp_path, recipe, strategy, f"train.strategy={strategy}", "train.max_steps=1", nproc=2, port=29566 + i)
    for rank in (0, 1):
        a, b = ((tmp_path / s / "samples" / f"step-000000.rank{rank}.jsonl").read_text() for s in ("ddp", "fsdp"))
        drawn = [json.loads(line) for line in a.splitlines()]
        assert a == b and len(drawn) == PROMPTS // 2 and all(len(d["candidates"]) == SAMPLES for d in drawn)
    train(tmp_path, recipe, "fsdp1", "train.strategy=fsdp", "train.max_steps=1")
    assert (tmp_path / "fsdp1" / "model" / "model.safetensors").is_file()


def test_more_processes_than_prompts_is_one_line(tmp_path, tts_world, tts_model):
    world, _ = tts_world
    recipe = write_recipe(tmp_path, world, tts_model, "grpo")
    proc = train(tmp_path, recipe, "run", "online.prompts_per_step=2", nproc=3, port=29569, check=False)
    line = ("error: online.prompts_per_step: 2 prompts per step cannot feed 3 processes (each samples whole "
            "prompts): set it to at least 3, best a multiple of 3")
    assert proc.returncode != 0
    assert proc.stderr.splitlines().count(line) == 1  # rank 0's; the launcher's summary repeats each rank's
    assert f"traceback : {line}" in proc.stderr
    assert not (tmp_path / "run").exists()
