"""Weights in the recipe's dtype: bf16 loading and training on the CPU (the shipped offline TTS model),
reference log-probs computed the trainer's way and stamped with their dtype, and one-line refusals of
bad scale settings."""

from __future__ import annotations

import json
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
