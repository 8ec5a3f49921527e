"""ASR models with LoRA and a frozen encoder under torchrun (gloo, CPU): no adapter inside the frozen
encoder (an adapter there never gets a gradient, and DDP stops at the second step), FSDP units that are
each decoder layer and each encoder layer, the frozen encoder kept whole on every rank, and the losses
and weights of one process for the same global batch under DDP (2 processes) and FSDP (3)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from conftest import REPO
from lpo_speech.errors import UserError
from lpo_speech.parallel import fsdp_blocks, fsdp_summary, frozen_parts
from lpo_speech.recipe import DataConfig, LoraSettings, ModelConfig, TrainConfig, TrainRecipe

TOL = dict(rel=1e-4, abs=1e-5)
LORA = "{r: 4, alpha: 8, target_modules: [q_proj, k_proj, v_proj, o_proj]}"
WORDS = "turn the kitchen lights off please the farmer sings twice a week in the green house".split()


@pytest.fixture(scope="module")
def tiny_audio_llm(tmp_path_factory) -> Path:
    from lpo_speech.asr.audio_llm_init import init_audio_llm

    return init_audio_llm(tmp_path_factory.mktemp("audiollm") / "tiny", size="test", seed=0)


def write_world(folder: Path, model: Path, adapter: str, n: int = 16) -> Path:
    """Pairs over short tones in noise (what the audio says does not matter here) and a recipe: LoRA on
    q/k/v/o_proj, frozen encoder, the live reference (the policy with its adapter off)."""
    rng, words = np.random.default_rng(0), random.Random(0)
    (folder / "wavs").mkdir(parents=True)
    with (folder / "pairs.jsonl").open("w") as f:
        for i in range(n):
            t = np.arange(int(rng.integers(8_000, 24_000))) / 16_000
            wav = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(folder / f"wavs/{i}.wav", wav.astype(np.float32), 16_000)
            chosen, rejected = (" ".join(words.choices(WORDS, k=words.randint(2, 6))) for _ in range(2))
            f.write(json.dumps({"id": f"p{i}", "audio": f"wavs/{i}.wav", "chosen_text": chosen,
                                "rejected_text": rejected}) + "\n")
    (folder / "recipe.yaml").write_text(
        f"model: {{path: {model}, adapter: {adapter}, freeze_encoder: true, dtype: float32, lora: {LORA}}}\n"
        "data: {pairs: pairs.jsonl}\n"
        "loss: {type: lpo-ste, beta: 0.2, r2: 0.8, gamma: 5.0}\n"
        "reference: {source: model}\n"
        "train: {out_dir: run, lr: 1.0e-2, warmup_steps: 0, max_steps: 3, seed: 1}\n"
        "runtime: {device: cpu}\n")
    return folder


def torchrun(cwd: Path, *args: str, port: int, nproc: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_port", str(port), "-m", "lpo_speech.cli", "train", "recipe.yaml", *args,
                           "--quiet"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def assert_same_run(one: Path, other: Path, encoder_prefix: str, base: Path) -> None:
    a, b = metrics(one), metrics(other)
    assert len(a) == len(b) == 3
    for key in ("loss", "x1", "x2", "margin", "chosen_nll", "grad_norm"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], **TOL), key
    assert any(abs(r["x1"]) > 1e-4 for r in a)  # the adapters trained
    w1, w2 = load_file(str(one / "model/model.safetensors")), load_file(str(other / "model/model.safetensors"))
    w0 = load_file(str(base / "model.safetensors"))
    assert sorted(w1) == sorted(w2)
    assert all((w1[k] - w2[k]).abs().max().item() < 1e-4 for k in w1)
    frozen = [k for k in w0 if k.startswith(encoder_prefix)]
    assert frozen and all(torch.equal(w0[k], w2[k]) for k in frozen)  # the encoder is saved as it was


def load(model: Path, adapter: str, *, freeze: bool, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    from lpo_speech.adapters import load_adapter
    from lpo_speech.policy import load_policy

    recipe = TrainRecipe(model=ModelConfig(path=str(model), adapter=adapter, freeze_encoder=freeze,
                                           lora=LoraSettings(r=4, alpha=8, target_modules=list(targets))),
                         data=DataConfig(pairs="unused"), train=TrainConfig(out_dir="unused"))
    return load_policy(recipe, load_adapter(recipe.model), torch.device("cpu"))[0]


def test_lora_leaves_the_frozen_encoder_without_adapters_and_fsdp_units(tiny_audio_llm, whisper_tiny):
    cfg = json.loads((tiny_audio_llm / "config.json").read_text())
    lm_layers, tower_layers = cfg["text_config"]["num_hidden_layers"], cfg["audio_config"]["encoder_layers"]
    for freeze in (True, False):
        policy = load(tiny_audio_llm, "audio_llm", freeze=freeze)
        trained = [n for n, p in policy.named_parameters() if p.requires_grad]
        assert trained and all("lora_" in n for n in trained)
        assert any(".language_model." in n for n in trained)
        assert any(".audio_tower." in n for n in trained) != freeze  # adapters in the tower only when it trains
        blocks = fsdp_blocks(policy)
        assert [type(b).__name__ for b in blocks].count("Qwen2DecoderLayer") == lm_layers
        assert [type(b).__name__ for b in blocks].count("Qwen2AudioEncoderLayer") == (0 if freeze else tower_layers)
        assert len(blocks) == lm_layers + (0 if freeze else tower_layers)  # not also the attention inside a layer
        summary = fsdp_summary(policy)
        assert summary["fsdp_units"] == len(blocks) + 1  # + the root
        assert (summary["fsdp_unsharded"] or "").startswith("Qwen2AudioEncoder (frozen)") == freeze
        assert [type(m).__name__ for _, m in frozen_parts(policy)] == (["Qwen2AudioEncoder"] if freeze else [])
    assert policy.hf_model.peft_config["default"].exclude_modules is None  # nothing frozen, nothing excluded

    whisper = load(whisper_tiny, "whisper", freeze=True)
    trained = [n for n, p in whisper.named_parameters() if p.requires_grad]
    assert trained and not any(".encoder." in n for n in trained) and any(".decoder." in n for n in trained)
    assert [type(b).__name__ for b in fsdp_blocks(whisper)] == ["WhisperDecoderLayer"] * 4
    assert fsdp_summary(whisper)["fsdp_unsharded"].startswith("WhisperEncoder (frozen)")

    # Targets that exist only in the frozen tower (its attention's out_proj): one line, not an empty adapter.
    with pytest.raises(UserError, match=r"model.lora.target_modules: \['out_proj'\] match no layer outside the "
                                        r"frozen encoder \(model.audio_tower; model.freeze_encoder\)"):
        load(tiny_audio_llm, "audio_llm", freeze=True, targets=("out_proj",))


def test_fsdp_refuses_a_model_without_blocks_in_one_line(tmp_path, lpo):
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    from conftest import make_pairs

    OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=64, n_positions=64, n_embd=16, n_layer=1, n_head=2)
                         ).save_pretrained(tmp_path / "gpt")
    make_pairs(tmp_path / "pairs.jsonl")
    (tmp_path / "r.yaml").write_text(f"model: {{path: {tmp_path / 'gpt'}}}\ndata: {{pairs: pairs.jsonl}}\n"
                                     "reference: {source: model}\ntrain: {out_dir: run, strategy: fsdp}\n")
    proc = lpo("train", "r.yaml", "--quiet", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: train.strategy: OpenAIGPTLMHeadModel names no transformer block class (_no_split_modules) to "
        "shard by; train it with train.strategy ddp"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_audio_llm_lora_frozen_encoder_under_ddp_and_fsdp_matches_one_process(tmp_path, tiny_audio_llm,
                                                                               monkeypatch):
    """In `make test`: one process in this one (no interpreter start), then 2 DDP and 3 FSDP processes."""
    from lpo_speech.recipe import load_train_recipe
    from lpo_speech.trainer import train

    world = write_world(tmp_path / "w", tiny_audio_llm, "audio_llm", n=12)
    monkeypatch.chdir(world)  # the recipe's paths are relative to where it runs, as on the command line
    train(load_train_recipe(world / "recipe.yaml", ["train.batch_size=6"]), quiet=True)  # global batch 6 in every run
    torchrun(world, "train.batch_size=3", "train.out_dir=run_ddp", port=29750, nproc=2)
    torchrun(world, "train.batch_size=2", "train.strategy=fsdp", "train.out_dir=run_fsdp", port=29751, nproc=3)
    for other in ("run_ddp", "run_fsdp"):
        assert_same_run(world / "run", world / other, "audio_tower.", tiny_audio_llm)
    runtime = json.loads((world / "run_fsdp/runtime.json").read_text())
    layers = json.loads((tiny_audio_llm / "config.json").read_text())["text_config"]["num_hidden_layers"]
    assert runtime["processes"] == 3 and runtime["fsdp_units"] == layers + 1
    assert runtime["fsdp_unsharded"].startswith("Qwen2AudioEncoder (frozen)")


@pytest.mark.slow
def test_whisper_lora_frozen_encoder_under_ddp_and_fsdp_matches_one_process(tmp_path, whisper_tiny, lpo):
    """Also an FSDP resume: the checkpoint holds the adapters; the frozen base and the unsharded frozen
    encoder come from the model as loaded."""
    import shutil

    world = write_world(tmp_path / "w", whisper_tiny, "whisper", n=8)
    lpo("train", "recipe.yaml", "train.batch_size=4", "--quiet", cwd=world)
    torchrun(world, "train.batch_size=2", "train.out_dir=run_ddp", port=29752, nproc=2)
    fsdp = ["train.batch_size=2", "train.strategy=fsdp", "train.save_every=2", "train.keep_checkpoints=3"]
    torchrun(world, *fsdp, "train.out_dir=run_fsdp", port=29753, nproc=2)
    for other in ("run_ddp", "run_fsdp"):
        assert_same_run(world / "run", world / other, "model.encoder.", whisper_tiny)
    assert json.loads((world / "run_fsdp/runtime.json").read_text())["fsdp_units"] == 5  # 4 decoder layers + root

    shutil.copytree(world / "run_fsdp", world / "run_k")  # as a kill after the checkpoint of step 2 leaves it
    shutil.rmtree(world / "run_k/checkpoints/step-000003")
    shutil.rmtree(world / "run_k/model")
    torchrun(world, *fsdp, "train.out_dir=run_k", "--resume", port=29754, nproc=2)
    assert [r["loss"] for r in metrics(world / "run_k")] == pytest.approx([r["loss"] for r in metrics(world / "run_fsdp")],
                                                                          rel=1e-6, abs=1e-7)
    w2, w3 = (load_file(str(world / f"{r}/model/model.safetensors")) for r in ("run_fsdp", "run_k"))
    assert all(torch.equal(w2[k], w3[k]) for k in w2)
