"""FSDP2 on CPU (2 gloo processes under torchrun): the same losses and weights as one process for the same
global batch, exact resume from torch.distributed.checkpoint shards, and bf16 + LoRA + activation
checkpointing together."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import REPO

TOL = dict(rel=1e-4, abs=1e-5)


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def torchrun(cwd: Path, *args: str, port: int, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_port", str(port), "-m", "lpo_speech.cli", *args, "--quiet"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def simulate_kill_after(run: Path, step: int) -> None:
    """What a kill just after checkpoint `step` leaves: later checkpoints and the final model gone (the
    metrics log keeps later lines; resume cuts it back). Deterministic, unlike timing a real kill, which
    test_trainer.py does for DDP."""
    for ckpt in (run / "checkpoints").glob("step-??????"):
        if int(ckpt.name.split("-")[1]) > step:
            shutil.rmtree(ckpt)
    shutil.rmtree(run / "model")


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process_and_resume_exactly(toy_world, lpo):
    common = ["train.max_steps=12", "train.save_every=4", "train.keep_checkpoints=5"]
    lpo("train", "recipe.yaml", *common, "--quiet", cwd=toy_world)
    torchrun(toy_world, "train", "recipe.yaml", *common, "train.batch_size=2", "train.strategy=fsdp",
             "train.out_dir=run_fsdp", port=29541)
    one, two = metrics(toy_world / "run"), metrics(toy_world / "run_fsdp")
    assert len(one) == len(two) == 12
    for key in ("loss", "x1", "x2", "margin", "chosen_nll", "grad_norm"):
        assert [r[key] for r in one] == pytest.approx([r[key] for r in two], **TOL), key
    w1 = load_file(str(toy_world / "run/model/model.safetensors"))
    w2 = load_file(str(toy_world / "run_fsdp/model/model.safetensors"))
    assert sorted(w1) == sorted(w2)
    assert all((w1[k] - w2[k]).abs().max().item() < 1e-4 for k in w1)
    ckpt = toy_world / "run_fsdp/checkpoints/step-000008"
    assert (ckpt / "dcp").is_dir() and json.loads((ckpt / "state.json").read_text())["format"] == "dcp"
    runtime = json.loads((toy_world / "run_fsdp/runtime.json").read_text())
    assert runtime["processes"] == 2 and runtime["strategy"] == "fsdp" and len(runtime["devices"]) == 2

    shutil.copytree(toy_world / "run_fsdp", toy_world / "run_k")
    simulate_kill_after(toy_world / "run_k", 4)
    torchrun(toy_world, "train", "recipe.yaml", *common, "train.batch_size=2", "train.strategy=fsdp",
             "train.out_dir=run_k", "--resume", port=29542)
    resumed = metrics(toy_world / "run_k")
    assert [r["step"] for r in resumed] == list(range(1, 13))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in two], rel=1e-6, abs=1e-7)
    w3 = load_file(str(toy_world / "run_k/model/model.safetensors"))
    assert all((w2[k] - w3[k]).abs().max().item() < 1e-6 for k in w2)


def test_fsdp_bf16_lora_with_activation_checkpointing(toy_world):
    torchrun(toy_world, "train", "recipe.yaml", "train.batch_size=2", "train.strategy=fsdp", "train.lr=3e-2",
             "model.dtype=bfloat16", "model.gradient_checkpointing=true",
             "model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj], save: both}",
             "train.out_dir=run_fl", port=29543)
    rows = metrics(toy_world / "run_fl")
    assert rows[0]["x1"] == 0.0  # the reference is the policy with its (zero-initialised) adapter disabled
    assert any(abs(r["x1"]) > 1e-3 for r in rows)  # and the adapter trains
    merged = load_file(str(toy_world / "run_fl/model/model.safetensors"))
    adapter = load_file(str(toy_world / "run_fl/adapter/adapter_model.safetensors"))
    assert {t.dtype for t in merged.values()} == {__import__("torch").bfloat16}  # saved in model.dtype
    assert adapter and all("lora_" in k for k in adapter)


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_ddp_training(toy_world, lpo):
    """`accelerate launch` is the other supported launcher (accelerate is a dependency through peft):
    it starts the same torch.distributed processes as torchrun, and the run matches one process."""
    lpo("train", "recipe.yaml", "--quiet", cwd=toy_world)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29544",
                           "-m", "lpo_speech.cli", "train", "recipe.yaml", "train.batch_size=2",
                           "train.out_dir=run_acc", "--quiet"], cwd=toy_world, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((toy_world / "run_acc/runtime.json").read_text())["processes"] == 2
    one, two = metrics(toy_world / "run"), metrics(toy_world / "run_acc")
    assert [r["loss"] for r in one] == pytest.approx([r["loss"] for r in two], **TOL)
