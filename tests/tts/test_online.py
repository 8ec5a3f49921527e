"""Online training of a codec LM with a judge-free rule reward (duration): GRPO and online LPO run
through `lpo-speech train`, keep every sampled batch, and a killed run resumed gives the losses of an
uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def recipe(tmp_path: Path, world: Path, model: Path, *, algorithm: str, out: str, extra: str = "") -> Path:
    path = tmp_path / f"{out}.yaml"
    path.write_text(f"""
track: tts
model: {{path: {model}, adapter: causal_lm, num_codebooks: 4}}
data: {{pairs: {tmp_path}/unused.jsonl, max_length: 512}}
build_pairs: {{prompts: {world}/train_prompts.jsonl, work_dir: {tmp_path}/unused, judge: null, keys: [],
  min_margins: {{}}, max_chosen_cer: null, chosen_stable: false, similarity: false, chosen: gold, gold: {world}/train.jsonl,
  max_seconds: 0.6, batch_size: 8}}
online: {{algorithm: {algorithm}, prompts_per_step: 2, samples: 3, rewards: {{duration: 1.0}}, temperature: 1.0{extra}}}
loss: {{type: lpo-ste}}
reference: {{source: model}}
train: {{out_dir: {tmp_path}/{out}, lr: 1.0e-3, max_steps: 4, batch_size: 2, save_every: 2, keep_checkpoints: 3, log_every: 1, warmup_steps: 0}}
runtime: {{device: cpu, sampling_threads: 1, threads: 1}}
""")
    return path


def rows(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


@pytest.mark.parametrize("algorithm", ["grpo", "pairs"])
def test_online_runs_keeps_samples_and_resumes_exactly(algorithm, tmp_path, lpo, tts_world, tts_model):
    world, _ = tts_world
    full = recipe(tmp_path, world, tts_model, algorithm=algorithm, out="full")
    out = lpo("train", str(full), "--quiet", cwd=tmp_path)
    assert "trained model:" in out.stdout
    run = tmp_path / "full"
    got = rows(run)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for r in got:  # rewards are the duration term's (one term, weight 1), each group's best >= worst
        assert r["reward"] == pytest.approx(r["term_duration"]) and r["reward_best"] >= r["reward_worst"]
        assert r["reward"] <= 0.0 and r["sample_s"] > 0
    assert (run / "model" / "model.safetensors").is_file() and (run / "training_curves.png").is_file()
    batch = [json.loads(l) for l in (run / "samples" / "step-000000.rank0.jsonl").read_text().splitlines()]
    assert len(batch) == 2 and all(len(b["candidates"]) == 3 for b in batch)
    assert all("reward" in c and "tokens" in c for b in batch for c in b["candidates"])
    if algorithm == "pairs":
        assert all(r["pairs"] >= 0 for r in got) and "x1" in got[0]
        assert got[0]["x1"] == pytest.approx(0.0, abs=1e-5)  # the first step: policy = reference
    else:
        assert "pg" in got[0] and got[0]["kl"] == 0.0

    # killed after step 2 (its checkpoint): a copy of the run without what came later, resumed, gives
    # the losses and rewards of the uninterrupted run (steps 2-3 drawn again from the restored weights)
    import shutil

    part = tmp_path / "part"
    shutil.copytree(run, part)
    for gone in (part / "checkpoints" / "step-000004", part / "model"):
        shutil.rmtree(gone)
    for f in (part / "samples").glob("step-00000[23]*"):
        f.unlink()
    lpo("train", str(full), f"train.out_dir={part}", "--resume", "--quiet", cwd=tmp_path)
    again = rows(part)
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    for a, b in zip(got, again):
        for k in ("loss", "reward", "reward_best", "reward_worst", "grad_norm"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (k, a["step"])


def test_online_recipe_errors_are_one_line(tmp_path, lpo, tts_world, tts_model):
    world, _ = tts_world
    path = recipe(tmp_path, world, tts_model, algorithm="pairs", out="bad")
    res = lpo("train", str(path), "online.rewards={cer: 1.0}", "--quiet", cwd=tmp_path, check=False)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == (
        "error: build_pairs.judge: online.rewards read the ASR judge (cer, wer, failure): set build_pairs.judge")
    assert not (tmp_path / "bad").exists()
    from lpo_speech.errors import UserError
    from lpo_speech.recipe import load_any_recipe

    with pytest.raises(UserError, match=r"reference.source: model \(or LoRA\)"):
        load_any_recipe(path, ["reference.source=precomputed"])
    with pytest.raises(UserError, match="online training runs train.max_steps steps"):
        load_any_recipe(path, ["train.max_steps=0"])
    with pytest.raises(UserError, match="online/rounds: one of them"):
        load_any_recipe(path, ["rounds={n: 2}"])


@pytest.mark.slow
def test_judge_workers_score_as_the_training_process(tmp_path, lpo, tts_world, tts_model):
    """`online.judge_workers: 2`: two spawned processes run the real Whisper judge (the bundled tiny.en)
    and give the candidates the scores, rewards and losses that scoring in the training process gives."""
    world, _ = tts_world
    path = recipe(tmp_path, world, tts_model, algorithm="pairs", out="unused")
    judged = ["build_pairs.judge={type: faster-whisper, model: bundled}", "build_pairs.keys=[cer]", "online.rewards={cer: 1.0, failure: 0.5}",
              "train.max_steps=1"]
    for out, workers in (("inproc", 0), ("pool", 2)):
        lpo("train", str(path), *judged, f"online.judge_workers={workers}", f"train.out_dir={tmp_path / out}",
            "--quiet", cwd=tmp_path)
    a, b = ([json.loads(l) for l in (tmp_path / run / "samples" / "step-000000.rank0.jsonl").read_text().splitlines()]
            for run in ("inproc", "pool"))
    assert a == b and len(a) == 2
    assert all("hyp" in c["scores"] and set(c["terms"]) == {"cer", "failure"} for g in a for c in g["candidates"])
    inproc, pool = rows(tmp_path / "inproc"), rows(tmp_path / "pool")
    assert [r["loss"] for r in inproc] == pytest.approx([r["loss"] for r in pool], rel=1e-6, abs=1e-7)
    assert all("term_cer" in r and "term_failure" in r for r in pool)
    assert json.loads((tmp_path / "pool" / "runtime.json").read_text())["online"].endswith("judges in 2 worker processes")
    from lpo_speech.errors import UserError
    from lpo_speech.recipe import load_any_recipe

    with pytest.raises(UserError, match="online.judge_workers: must be >= 0"):
        load_any_recipe(path, ["online.judge_workers=-1"])
