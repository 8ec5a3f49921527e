"""The preference trainer end to end on a tiny real Llama: learning, DDP equivalence, exact resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import REPO  # noqa: F401  (rootdir conftest)


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def test_train_end_to_end_learns_and_writes_everything(toy_world, lpo):
    lpo("train", "recipe.yaml", "train.max_steps=24", "train.lr=1e-2", "--quiet", cwd=toy_world)
    run = toy_world / "run"
    rows = metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 25))
    for key in ("loss", "loss_unreg", "x1", "x2", "margin", "accuracy", "chosen_nll", "r2", "grad_norm", "lr"):
        assert key in rows[0]
    assert rows[0]["x1"] == pytest.approx(0.0, abs=1e-6)  # policy starts equal to the reference
    # LPO separates chosen from rejected on the toy task
    assert rows[-1]["margin"] > 0.5 and rows[-1]["accuracy"] == 1.0
    assert rows[-1]["loss_unreg"] < rows[0]["loss_unreg"]
    assert (run / "model" / "config.json").exists() and (run / "training_curves.png").stat().st_size > 10_000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    cfg = (run / "config.yaml").read_text()
    assert "max_steps: 24" in cfg and "lr: 0.01" in cfg  # effective config, overrides applied


def test_precomputed_reference_equals_reference_model(toy_world, lpo):
    lpo("ref-logps", "recipe.yaml", "--in", "pairs.jsonl", "--out", "pairs_ref.jsonl", "--quiet", cwd=toy_world)
    lines = (toy_world / "pairs_ref.jsonl").read_text().splitlines()
    assert len(lines) == 32 and json.loads(lines[0])["ref_logp_mode"] == "mean/flat"
    lpo("train", "recipe.yaml", "--quiet", cwd=toy_world)
    lpo("train", "recipe.yaml", "--quiet", "data.pairs=pairs_ref.jsonl", "reference.source=precomputed",
        "train.out_dir=run_pre", cwd=toy_world)
    a, b = metrics(toy_world / "run"), metrics(toy_world / "run_pre")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)


def test_ref_logps_max_margin_filter(toy_world, lpo):
    lpo("ref-logps", "recipe.yaml", "--in", "pairs.jsonl", "--out", "all.jsonl", "--quiet", cwd=toy_world)
    rows = [json.loads(l) for l in (toy_world / "all.jsonl").read_text().splitlines()]
    margins = sorted(r["ref_chosen_logp"] - r["ref_rejected_logp"] for r in rows)
    threshold = margins[len(margins) // 2]
    out = lpo("ref-logps", "recipe.yaml", "--in", "pairs.jsonl", "--out", "f.jsonl", "--max-margin",
              str(threshold), "--quiet", cwd=toy_world)
    kept = [json.loads(l)["id"] for l in (toy_world / "f.jsonl").read_text().splitlines()]
    want = [r["id"] for r in rows if r["ref_chosen_logp"] - r["ref_rejected_logp"] <= threshold]
    assert kept == want and 0 < len(kept) < 32  # input order kept
    assert f"{32 - len(kept)} dropped" in out.stdout


@pytest.mark.slow
def test_two_processes_match_one_process(toy_world, lpo):
    """Same global batch (1 x 4 vs 2 x 2 on gloo): same losses within float tolerance."""
    lpo("train", "recipe.yaml", "--quiet", cwd=toy_world)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
         "-m", "lpo_speech.cli", "train", "recipe.yaml", "train.batch_size=2", "train.out_dir=run_ddp", "--quiet"],
        cwd=toy_world, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = metrics(toy_world / "run"), metrics(toy_world / "run_ddp")
    assert len(one) == len(two) == 8
    for key in ("loss", "x1", "x2", "margin", "chosen_nll", "grad_norm"):
        assert [r[key] for r in one] == pytest.approx([r[key] for r in two], rel=1e-4, abs=1e-5), key
    w1 = load_file(str(toy_world / "run/model/model.safetensors"))
    w2 = load_file(str(toy_world / "run_ddp/model/model.safetensors"))
    for k in w1:
        assert (w1[k] - w2[k]).abs().max().item() < 1e-4, k


@pytest.mark.slow
def test_killed_and_resumed_run_reproduces_uninterrupted(toy_world, lpo):
    common = ["train.max_steps=20", "train.save_every=4", "train.grad_accum=2", "train.batch_size=2"]
    lpo("train", "recipe.yaml", *common, "--quiet", cwd=toy_world)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "lpo_speech.cli", "train", "recipe.yaml", *common, "train.out_dir=run_k", "--quiet"]
    proc = subprocess.Popen(args, cwd=toy_world, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = toy_world / "run_k/checkpoints/step-000008"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(json.loads(l)["step"] for l in (toy_world / "run_k/metrics.jsonl").read_text().splitlines())
    assert 8 <= killed_at < 20, "the run was not interrupted mid-way"
    assert not (toy_world / "run_k/model").exists()
    # without --resume the run refuses to overwrite: nothing is lost
    refused = lpo("train", "recipe.yaml", *common, "train.out_dir=run_k", cwd=toy_world, check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr and "Traceback" not in refused.stderr
    lpo("train", "recipe.yaml", *common, "train.out_dir=run_k", "--resume", "--quiet", cwd=toy_world)
    a, b = metrics(toy_world / "run"), metrics(toy_world / "run_k")
    assert [r["step"] for r in b] == list(range(1, 21))
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-6, abs=1e-7)
    wa = load_file(str(toy_world / "run/model/model.safetensors"))
    wb = load_file(str(toy_world / "run_k/model/model.safetensors"))
    assert all((wa[k] - wb[k]).abs().max().item() < 1e-6 for k in wa)


def test_sft_trains_on_chosen_only_examples_and_pairs_need_rejected(toy_world, lpo):
    rows = [json.loads(l) for l in (toy_world / "pairs.jsonl").read_text().splitlines()]
    (toy_world / "sft.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "rejected_tokens"}) + "\n" for r in rows))
    lpo("train", "recipe.yaml", "data.pairs=sft.jsonl", "loss.type=sft", "loss.sft_weight=1.0", "loss.gamma=0", "train.lr=3e-2",
        "train.max_steps=30", "train.out_dir=run_sft", "--quiet", cwd=toy_world)
    nll = [r["chosen_nll"] for r in metrics(toy_world / "run_sft")]
    assert sum(nll[-5:]) / 5 < sum(nll[:5]) / 5 - 0.3  # plain SFT lowers the chosen NLL (noisy per batch)
    refused = lpo("train", "recipe.yaml", "data.pairs=sft.jsonl", cwd=toy_world, check=False)
    assert refused.returncode == 2 and "sft.jsonl:1: no rejected response" in refused.stderr


def test_gradient_checkpointing_and_bf16_autocast_paths(toy_world, lpo):
    lpo("train", "recipe.yaml", "train.max_steps=3", "--quiet", cwd=toy_world)
    lpo("train", "recipe.yaml", "train.max_steps=3", "model.gradient_checkpointing=true", "train.out_dir=run_gc",
        "--quiet", cwd=toy_world)
    lpo("train", "recipe.yaml", "train.max_steps=3", "model.dtype=bfloat16", "train.out_dir=run_bf16", "--quiet",
        cwd=toy_world)
    base, gc, bf16 = (metrics(toy_world / d) for d in ("run", "run_gc", "run_bf16"))
    assert [r["loss"] for r in gc] == pytest.approx([r["loss"] for r in base], rel=1e-5)  # recomputation is exact
    assert [r["loss"] for r in bf16] == pytest.approx([r["loss"] for r in base], abs=0.05)  # bf16 autocast: close


def test_smoke_run_says_whether_the_model_learned_and_keeps_no_checkpoint(toy_world, lpo):
    out = lpo("train", "recipe.yaml", "train.lr=1e-7", "train.warmup_steps=5", "--smoke", "--quiet", cwd=toy_world)
    said = out.stdout.strip().splitlines()[-1]
    assert said.startswith("smoke run: 20 steps at lr 1e-05 -> run-smoke:") and "the model learned" in said, said
    run = toy_world / "run-smoke"
    rows = metrics(run)
    assert len(rows) == 20 and all(r["lr"] == pytest.approx(1e-5) for r in rows)  # no warmup, a constant raised rate
    assert rows[-1]["margin"] > rows[0]["margin"]
    smoke = json.loads((run / "runtime.json").read_text())["smoke"]
    assert smoke["moved"] is True and smoke["pairs"] == 16 and smoke["steps"] == 20
    assert not (run / "checkpoints").exists() and (run / "model/config.json").is_file()
    assert not (toy_world / "run").exists()  # the real run's folder stays free
    refused = lpo("train", "recipe.yaml", "--smoke", "--resume", cwd=toy_world, check=False)
    assert refused.returncode == 2 and "kept no checkpoint to continue from" in refused.stderr


def test_checkpoints_without_optimizer_state(toy_world, lpo):
    lpo("train", "recipe.yaml", "train.save_optimizer=false", "train.save_every=3", "train.keep_checkpoints=5",
        "--quiet", cwd=toy_world)
    ckpts = sorted(p.name for p in (toy_world / "run/checkpoints").iterdir())
    assert ckpts == ["step-000003", "step-000006"]  # none after the last step (8): model/ is the result
    assert not (toy_world / "run/checkpoints/step-000006/optimizer.safetensors").exists()
    shutil.rmtree(toy_world / "run/model")
    out = lpo("train", "recipe.yaml", "train.save_optimizer=false", "train.save_every=3", "train.keep_checkpoints=5",
              "--resume", "--quiet", cwd=toy_world)
    assert "holds no optimizer state" in out.stdout and (toy_world / "run/model/config.json").is_file()
    assert [r["step"] for r in metrics(toy_world / "run")] == list(range(1, 9))
