"""Weights in the recipe's dtype: bf16 loading and training on the CPU (the shipped offline TTS model),
reference log-probs computed the trainer's way (per strategy) and stamped with their compute path, so
x1 is 0 at step 0 under DDP, FSDP and LoRA, and one-line refusals of bad scale settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def test_bf16_weights_train_on_cpu_for_the_offline_tts_model(toy_world, lpo):
    """assets/tts-tiny-sft-sync (a real offline codec LM) loaded in bf16: it trains, its frozen-free body
    trains in an fp32 master copy, and the saved model is bf16 like the recipe says."""
    model = REPO / "assets" / "tts-tiny-sft-sync"
    lpo("train", "recipe.yaml", f"model.path={model}", "model.dtype=bfloat16", "train.max_steps=3",
        "train.out_dir=run_bf16", "--quiet", cwd=toy_world)
    run = toy_world / "run_bf16"
    rows = metrics(run)
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    saved = load_file(str(run / "model" / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    start = load_file(str(model / "model.safetensors"))
    assert any(not torch.equal(saved[k], start[k].to(torch.bfloat16)) for k in saved)  # the weights moved
    runtime = json.loads((run / "runtime.json").read_text())
    assert runtime["weights"] == "bfloat16" and runtime["master"] == "float32"
    assert (run / "model" / "config.json").is_file() and "tts" in json.loads((run / "model" / "config.json").read_text())


def test_reference_logps_carry_their_dtype_and_match_the_first_step(toy_world, lpo):
    lpo("ref-logps", "recipe.yaml", "model.dtype=bfloat16", "--in", "pairs.jsonl", "--out", "ref_bf16.jsonl",
        "--quiet", cwd=toy_world)
    first = json.loads((toy_world / "ref_bf16.jsonl").read_text().splitlines()[0])
    assert first["ref_logp_dtype"] == "bfloat16" and first["ref_logp_mode"] == "mean/flat"
    lpo("train", "recipe.yaml", "model.dtype=bfloat16", "data.pairs=ref_bf16.jsonl", "reference.source=precomputed",
        "train.max_steps=1", "train.out_dir=run_pre", "--quiet", cwd=toy_world)
    # The stored values are the policy's own at step 0, up to bf16 rounding of differently padded batches.
    assert abs(metrics(toy_world / "run_pre")[0]["x1"]) < 0.02
    refused = lpo("train", "recipe.yaml", "model.dtype=float32", "data.pairs=ref_bf16.jsonl",
                  "reference.source=precomputed", "train.out_dir=run_f32", "--quiet", cwd=toy_world, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    assert "ref_bf16.jsonl:1: reference log-probs were computed in bfloat16" in refused.stderr
    assert not (toy_world / "run_f32").exists()  # refused before any output


def torchrun(cwd: Path, *args: str, port: int, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "lpo_speech.cli", *args, "train.batch_size=2", "--quiet"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert not check or proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_step_zero_x1_is_zero_for_every_strategy(toy_world, lpo):
    """bf16: reference log-probs computed for the recipe's strategy are exactly the policy's at step 0
    on the CPU (the same numerics, same rows): DDP (fp32 master weights under bf16 autocast), FSDP (the
    bf16 weight copies FSDP gathers: before they were computed like DDP's, x1 was about -6e-5 here),
    LoRA under FSDP, and the live reference under DDP. Reference log-probs of one path refuse the other."""
    bf16 = ["model.dtype=bfloat16", "train.max_steps=1", "train.lr=1e-9"]
    lora = "model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}"
    for name, extra in (("ddp", []), ("fsdp", ["train.strategy=fsdp"]), ("lora", [lora, "train.strategy=fsdp"])):
        lpo("ref-logps", "recipe.yaml", *bf16, *extra, "--in", "pairs.jsonl", "--out", f"ref_{name}.jsonl", "--quiet",
            cwd=toy_world)
    tags = {n: json.loads((toy_world / f"ref_{n}.jsonl").read_text().splitlines()[0])["ref_logp_dtype"]
            for n in ("ddp", "fsdp", "lora")}
    assert tags == {"ddp": "bfloat16", "fsdp": "bfloat16-weights", "lora": "bfloat16"}
    pre = ["reference.source=precomputed", *bf16]
    torchrun(toy_world, "train", "recipe.yaml", *pre, "data.pairs=ref_ddp.jsonl", "train.out_dir=ddp", port=29551)
    torchrun(toy_world, "train", "recipe.yaml", *pre, "data.pairs=ref_fsdp.jsonl", "train.strategy=fsdp",
             "train.out_dir=fsdp", port=29552)
    torchrun(toy_world, "train", "recipe.yaml", *pre, lora, "data.pairs=ref_lora.jsonl", "train.strategy=fsdp",
             "train.out_dir=lora", port=29553)
    lpo("train", "recipe.yaml", *bf16, "train.out_dir=live", "--quiet", cwd=toy_world)  # reference.source: model
    for run in ("ddp", "fsdp", "lora", "live"):
        first = metrics(toy_world / run)[0]
        assert abs(first["x1"]) < 1e-6 and abs(first["x2"]) < 1e-6, (run, first["x1"], first["x2"])
    refused = torchrun(toy_world, "train", "recipe.yaml", *pre, "data.pairs=ref_ddp.jsonl", "train.strategy=fsdp",
                       "train.out_dir=mixed", port=29554, check=False)
    line = ("error: ref_ddp.jsonl:1: reference log-probs were computed in bfloat16 but this run computes in "
            "bfloat16-weights (model.dtype, train.strategy): rerun `lpo-speech ref-logps` with this recipe")
    assert refused.returncode != 0 and refused.stderr.splitlines().count(line) == 1
    assert not (toy_world / "mixed").exists()


@pytest.mark.parametrize("override,expect", [
    ("train.strategy=zero3", "train.strategy: one of ddp, fsdp"),
    ("model.lora={r: 0}", "model.lora.r: must be >= 1"),
    ("model.lora={r: 4, target_modules: [no_such_proj]}", "model.lora.target_modules"),
    ("model.dtype=float16", "model.dtype: auto, float32 or bfloat16"),
    ("train.fsdp_cpu_offload=true", "train.fsdp_cpu_offload: needs strategy fsdp"),
    ("runtime.device=tpu", "runtime.device: auto, cpu or cuda"),
    ("runtime.device=cuda", "cuda: no CUDA device is visible"),
    ("train.device=cpu", "'train.device' moved: write `runtime: {device: auto|cpu|cuda}`"),
])
def test_bad_scale_settings_are_one_line(toy_world, lpo, override, expect):
    if override == "runtime.device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = lpo("train", "recipe.yaml", override, "train.out_dir=bad", cwd=toy_world, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expect in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (toy_world / "bad").exists()


def test_bf16_refused_where_the_device_lacks_it(monkeypatch):
    """Every CPU here computes in bf16, so the capability probe is replaced (a stand-in, said so): the
    refusal path itself is real."""
    from lpo_speech import precision
    from lpo_speech.errors import UserError

    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    with pytest.raises(UserError, match="model.dtype: bfloat16 is not supported on cpu"):
        precision.resolve_dtype("bfloat16", torch.device("cpu"))
    assert precision.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert precision.resolve_dtype("float32", torch.device("cpu")) == torch.float32
