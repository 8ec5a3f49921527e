"""The README's "Align your own model" walk, per track, as a new user runs it: the starter recipe with
its paths overridden on the command line, build-pairs, the smoke line (`train --smoke`), and eval of
the base against the smoke model. Small overrides keep it inside a CPU budget (fewer samples, smaller
batches); everything else is the walk's own commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO


def hyps(eval_dir: Path, label: str, key: str) -> dict[str, object]:
    found = list(eval_dir.rglob(f"{label}/utterances.jsonl"))
    assert len(found) == 1, found
    return {r["id"]: r[key] for r in map(json.loads, found[0].read_text().splitlines())}


@pytest.mark.slow
def test_asr_walk_smoke_run_moves_the_model(tmp_path, lpo):
    from lpo_speech.synthetic.synth import make_asr_data

    make_asr_data(tmp_path / "my-data", n_train=8, n_test=4, styles=["espeak"], workers=1, progress=False)
    recipe = str(REPO / "recipes/asr/whisper-own-data.yaml")
    lpo("import-whisper-ct2", "bundled", "runs/my-whisper/base", cwd=tmp_path)
    paths = ["build_pairs.manifest=my-data/train.jsonl"]
    budget = ["build_pairs.samples=2", "build_pairs.batch_size=8", "model.freeze_encoder=true",
              "train.batch_size=4", "train.grad_accum=1"]
    built = lpo("build-pairs", recipe, *paths, *budget, "--quiet", cwd=tmp_path)
    line = built.stdout.strip().splitlines()[-1]
    assert line.startswith("build-pairs: 8 utterances; model runs/my-whisper/base loaded (candidates, reference "
                           "log-probs)") and "with reference log-probs to runs/my-whisper/pairs/pairs_ref.jsonl" in line
    smoke = lpo("train", recipe, *paths, *budget, "--smoke", "--quiet", cwd=tmp_path)
    said = smoke.stdout.strip().splitlines()[-1]
    assert said.startswith("smoke run: 20 steps") and "the model learned from these pairs" in said, smoke.stdout
    assert "checks the plumbing, not the quality" in said
    run = tmp_path / "runs/my-whisper/lpo-smoke"
    assert json.loads((run / "runtime.json").read_text())["smoke"]["moved"] is True
    assert not (run / "checkpoints").exists() and not (tmp_path / "runs/my-whisper/lpo").exists()
    lpo("eval", "--wer", "--model", "runs/my-whisper/base", "--model", str(run / "model"), "--label", "base",
        "--label", "smoke", "--data", "test=my-data/test.jsonl", "--out", "runs/my-whisper/eval", "--quiet",
        cwd=tmp_path)
    base, trained = (hyps(tmp_path / "runs/my-whisper/eval", label, "hyp") for label in ("base", "smoke"))
    assert base.keys() == trained.keys() and base != trained  # the smoke run changed what the model writes


@pytest.mark.slow
def test_tts_walk_smoke_run_moves_the_model(tmp_path, lpo):
    pytest.importorskip("pycodec2")
    pytest.importorskip("piper")
    from lpo_speech.tts.world import make_tts_data

    world = tmp_path / "world"
    make_tts_data(world, 16, 3, n_dev=1, workers=1, ceiling=False, progress=False)
    shutil.copytree(REPO / "assets/tts-tiny-sft-sync", tmp_path / "runs/my-tts/base")
    shutil.copytree(world / "ref", tmp_path / "my-data/ref")  # the prompts' reference voices
    for name in ("train_prompts.jsonl", "test_prompts.jsonl"):
        shutil.copy(world / name, tmp_path / "my-data" / name)
    recipe = str(REPO / "recipes/tts/codec-lm-own-data.yaml")
    paths = ["build_pairs.prompts=my-data/train_prompts.jsonl"]
    budget = ["build_pairs.samples=3", "runtime.sampling_threads=1", "train.batch_size=4"]
    built = lpo("build-pairs", recipe, *paths, *budget, "--quiet", cwd=tmp_path)
    line = built.stdout.strip().splitlines()[-1]
    assert line.startswith("build-pairs: ") and "model runs/my-tts/base loaded (candidates, reference log-probs)" in line
    smoke = lpo("train", recipe, *paths, *budget, "--smoke", "--quiet", cwd=tmp_path)
    said = smoke.stdout.strip().splitlines()[-1]
    assert said.startswith("smoke run: 20 steps") and "the model learned from these pairs" in said, smoke.stdout
    run = tmp_path / "runs/my-tts/lpo-smoke"
    lpo("eval", "--wer", "--model", "runs/my-tts/base", "--model", str(run / "model"), "--label", "base", "--label",
        "smoke", "--data", "test=my-data/test_prompts.jsonl", "--out", "runs/my-tts/eval", "--no-dnsmos",
        "--sampling-threads", "1", "--quiet", cwd=tmp_path)
    base, trained = (hyps(tmp_path / "runs/my-tts/eval", label, "tokens") for label in ("base", "smoke"))
    assert base.keys() == trained.keys() and base != trained  # the smoke run changed what the model says
