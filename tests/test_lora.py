"""LoRA with peft on a tiny real Llama: only adapter weights train, the adapter-off model is the base model
exactly (the live reference needs no copy), the three save modes, `merge --adapter`, and exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO  # noqa: F401  (rootdir conftest)

LORA = "model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj], save: both}"


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def pair_logps(pair_model, toy_world: Path, adapter) -> torch.Tensor:
    from lpo_speech.records import PreferencePair, load_jsonl

    pairs = load_jsonl(toy_world / "pairs.jsonl", PreferencePair)[:6]
    batch = adapter.collate([adapter.encode(p, "test", toy_world) for p in pairs])
    with torch.no_grad():
        out = pair_model.eval()(batch)
    return torch.cat([out.chosen, out.rejected])


def test_only_adapter_weights_get_gradients(toy_world):
    from lpo_speech.adapters import load_adapter
    from lpo_speech.recipe import LoraSettings
    from lpo_speech.recipe import load_train_recipe
    from lpo_speech.policy import load_policy

    recipe = load_train_recipe(toy_world / "recipe.yaml")
    recipe.model.lora = LoraSettings(r=4, target_modules=["q_proj", "v_proj"])
    adapter = load_adapter(recipe.model)
    policy, dtype = load_policy(recipe, adapter, torch.device("cpu"))
    from lpo_speech.records import PreferencePair, load_jsonl

    pairs = load_jsonl(toy_world / "pairs.jsonl", PreferencePair)[:4]
    out = policy(adapter.collate([adapter.encode(p, "t", toy_world) for p in pairs]))
    (out.chosen.sum() - out.rejected.sum()).backward()
    named = dict(policy.named_parameters())
    lora = {n for n in named if "lora_" in n}
    assert lora and all(named[n].requires_grad and named[n].grad is not None for n in lora)
    assert all(not p.requires_grad and p.grad is None for n, p in named.items() if n not in lora)
    assert all(named[n].dtype == torch.float32 for n in lora)  # the fp32 master copy of what trains


def test_lora_trains_reference_is_base_save_modes_and_merge(toy_world, lpo):
    from lpo_speech.adapters import load_adapter
    from lpo_speech.recipe import ModelConfig
    from lpo_speech.lora import adapter_disabled

    lpo("train", "recipe.yaml", LORA, "train.lr=3e-2", "train.max_steps=24", "train.out_dir=run_lora", "--quiet",
        cwd=toy_world)
    run = toy_world / "run_lora"
    rows = metrics(run)
    assert rows[0]["x1"] == 0.0  # reference = the same model with the adapter off: exactly the start
    assert sum(r["margin"] for r in rows[-4:]) / 4 > 0.03  # the adapter separates chosen from rejected
    assert json.loads((run / "runtime.json").read_text())["lora"] == "r=4"
    ckpt = load_file(str(sorted((run / "checkpoints").glob("step-*"))[-1] / "model.safetensors"))
    assert ckpt and all("lora_" in k for k in ckpt)  # a LoRA checkpoint holds the adapter only

    base_path = str(Path(json.loads((run / "adapter/adapter_config.json").read_text())["base_model_name_or_path"]))
    adapter = load_adapter(ModelConfig(path=base_path))
    base = adapter.load(base_path, torch.device("cpu"))
    from peft import PeftModel

    tuned = adapter.load(base_path, torch.device("cpu"))
    tuned.set_hf_model(PeftModel.from_pretrained(tuned.hf_model, str(run / "adapter")))
    with adapter_disabled(tuned):
        off = pair_logps(tuned, toy_world, adapter)
    assert torch.equal(off, pair_logps(base, toy_world, adapter))  # adapter off = base, exactly
    on = pair_logps(tuned, toy_world, adapter)
    assert (on - off).abs().max() > 1e-3

    merged = adapter.load(str(run / "model"), torch.device("cpu"))
    assert torch.allclose(pair_logps(merged, toy_world, adapter), on, atol=1e-4)  # model/ = adapter folded in
    lpo("merge", "--adapter", str(run / "adapter"), "--out", "merged", cwd=toy_world)
    a, b = load_file(str(toy_world / "merged/model.safetensors")), load_file(str(run / "model/model.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)

    lpo("train", "recipe.yaml", LORA.replace("both", "adapter"), "train.max_steps=1", "train.out_dir=run_a",
        "--quiet", cwd=toy_world)
    assert (toy_world / "run_a/model/adapter_config.json").is_file() and not (toy_world / "run_a/adapter").exists()
    # export folds an adapter saved alone into its base: the exported folder loads as a plain model
    lpo("export", "run_a", "hub", cwd=toy_world)
    folded = adapter.load(str(toy_world / "hub"), torch.device("cpu"))
    tuned_a = adapter.load(base_path, torch.device("cpu"))
    tuned_a.set_hf_model(PeftModel.from_pretrained(tuned_a.hf_model, str(toy_world / "run_a/model")))
    assert torch.allclose(pair_logps(folded, toy_world, adapter), pair_logps(tuned_a, toy_world, adapter), atol=1e-4)
    assert "pipeline_tag: text-to-speech" in (toy_world / "hub/README.md").read_text()


def test_lora_resume_is_exact(toy_world, lpo):
    common = [LORA, "train.lr=3e-2", "train.max_steps=10", "train.save_every=4", "train.keep_checkpoints=5"]
    lpo("train", "recipe.yaml", *common, "train.out_dir=run_full", "--quiet", cwd=toy_world)
    shutil.copytree(toy_world / "run_full", toy_world / "run_k")
    for ckpt in (toy_world / "run_k/checkpoints").glob("step-*"):  # as a kill just after step 4's checkpoint leaves it
        if ckpt.name != "step-000004":
            shutil.rmtree(ckpt)
    for folder in ("model", "adapter"):
        shutil.rmtree(toy_world / "run_k" / folder)
    lpo("train", "recipe.yaml", *common, "train.out_dir=run_k", "--resume", "--quiet", cwd=toy_world)
    a, b = metrics(toy_world / "run_full"), metrics(toy_world / "run_k")
    assert [r["step"] for r in b] == list(range(1, 11))
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-6, abs=1e-7)
    wa = load_file(str(toy_world / "run_full/adapter/adapter_model.safetensors"))
    wb = load_file(str(toy_world / "run_k/adapter/adapter_model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_lora_target_errors_and_warnings_of_peft(tmp_path, tiny_lm, lpo):
    """peft warns before it raises (here: that it renamed the recorded base from the absolute path to the
    relative `model.path`): a target that matches nothing is our one line alone, naming the model's
    layers. A run that works keeps the absolute base path in adapter_config.json, without that warning."""
    from conftest import make_pairs

    shutil.copytree(tiny_lm, tmp_path / "lm")
    make_pairs(tmp_path / "pairs.jsonl", n=8)
    (tmp_path / "r.yaml").write_text("model: {path: lm}\ndata: {pairs: pairs.jsonl}\nreference: {source: model}\n"
                                     "train: {out_dir: run, max_steps: 1, batch_size: 2}\n")
    res = lpo("train", "r.yaml", "model.lora={r: 4, target_modules: [nonexistent]}", "--quiet", cwd=tmp_path,
              check=False)
    assert res.returncode == 2 and not res.stdout, (res.stdout, res.stderr[-3000:])
    assert res.stderr.splitlines() == [
        "error: model.lora.target_modules: ['nonexistent'] match no module of the model (its linear layers: "
        "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head; or [all-linear])"], res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm", "pairs.jsonl", "r.yaml"]

    res = lpo("train", "r.yaml", "model.lora={r: 4, target_modules: [q_proj], save: adapter}", "--quiet",
              cwd=tmp_path)
    assert "renamed" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    saved = json.loads((tmp_path / "run" / "model" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str((tmp_path / "lm").resolve())
