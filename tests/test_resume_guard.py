"""Resume that cannot mix runs, and nothing left behind by a failure, for every sharded stage: ASR and TTS
eval, ASR and TTS build-pairs (candidates), ref-logps.

A rerun into a finished output with another manifest, model or setting stops in one line (exit 2) and
leaves every byte of the earlier output as it was; `--overwrite` starts over; the same inputs resume,
also from a copy of the folder elsewhere (inputs are compared by content, not path). Interrupted runs
resume to the uninterrupted result: here the interruption is simulated deterministically (a Ctrl-C
injected at a chosen batch, or the files a kill leaves), since timing a real SIGKILL on these tiny
inputs would be flaky; real SIGKILL tests: tests/asr/test_asr_pipeline.py (build-pairs) and
tests/test_trainer.py (train).

The CLI runs in-process (`lpo_speech.cli.main`, the console script's code path) to keep this module fast.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, espeak_wav, make_tiny_llama
from lpo_speech.cli import main

ASR_RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a folder): the whole state a rerun must keep."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def ok(args: list) -> None:
    assert main([str(a) for a in args]) == 0


def fails(capsys, args: list, *expected: str) -> str:
    """exit 2 with one `error:` line holding every `expected` fragment."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    return err


def variant(model: Path, to: Path) -> Path:
    """Another model folder: the same files (linked, not copied) but a config.json with one more key."""
    to.mkdir(parents=True)
    for p in model.iterdir():
        if p.name != "config.json":
            (to / p.name).symlink_to(p.resolve())
    cfg = json.loads((model / "config.json").read_text())
    (to / "config.json").write_text(json.dumps({**cfg, "lpo_test_variant": 1}))
    return to


@pytest.fixture
def speech(tmp_path, monkeypatch, whisper_tiny) -> Path:
    """A folder with a linked copy of Whisper tiny.en (`model/`), three utterances and manifests:
    a.jsonl, b.jsonl (other texts) and broken.jsonl (row 3 is not audio)."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    (root / "wavs").mkdir(parents=True)
    model = root / "model"
    model.mkdir()
    for p in whisper_tiny.iterdir():
        (model / p.name).symlink_to(p.resolve())
    texts = ["hello there", "good morning", "turn the lights off"]
    for i, t in enumerate(texts):
        espeak_wav(root / "wavs" / f"u{i}.wav", t)
    (root / "wavs" / "broken.wav").write_bytes(b"RIFF not really a wav file" * 40)

    def manifest(name, rows):
        (root / name).write_text("".join(json.dumps({"id": f"u{i}", "audio": a, "text": t}) + "\n"
                                         for i, (a, t) in enumerate(rows)))

    manifest("a.jsonl", [(f"wavs/u{i}.wav", t) for i, t in enumerate(texts)])
    manifest("b.jsonl", [(f"wavs/u{i}.wav", t.upper()) for i, t in enumerate(texts)])
    manifest("broken.jsonl", [("wavs/u0.wav", texts[0]), ("wavs/u1.wav", texts[1]), ("wavs/broken.wav", texts[2])])
    return root


# ------------------------------------------------------------------------------------------- ASR eval

def test_asr_eval_reruns_cannot_mix_and_copies_resume(speech, capsys):
    ev = ["eval", "--wer", "--quiet", "--device", "cpu", "--out", "run/ev"]
    a = ["--model", "run/model", "--data", "run/a.jsonl"]
    ok([*ev, *a])
    rows = speech / "ev" / "model" / "utterances.jsonl"
    finished, before = rows.read_bytes(), tree(speech / "ev")
    settings = json.loads((speech / "ev" / "model" / "utterances.jsonl.settings.json").read_text())
    assert settings["model"]["path"] == "../../model" and settings["data"]["path"] == "../../a.jsonl"  # relative
    # A different --data whose row 3 is not audio: its audio is checked before anything is touched.
    fails(capsys, [*ev, "--model", "run/model", "--data", "run/broken.jsonl"], "broken.wav: cannot read audio")
    # (a) other manifest content, (b) another model under the same label, (c) other decoding settings.
    fails(capsys, [*ev, "--model", "run/model", "--data", "run/b.jsonl"],
          "run/ev/model/utterances.jsonl: was made with other settings (data run/a.jsonl -> run/b.jsonl "
          "(another file: other content))", "pass --overwrite")
    variant(speech / "model", speech / "other" / "model")
    fails(capsys, [*ev, "--model", "run/other/model", "--data", "run/a.jsonl"],
          "(model run/model -> run/other/model (another model folder: other content))")
    fails(capsys, [*ev, *a, "--beam", "2"], "(beam 1 -> 2)")
    (speech / "a.jsonl").write_text((speech / "a.jsonl").read_text() + "\n")  # same path, other bytes
    fails(capsys, [*ev, *a], "(data run/a.jsonl: other content than when it was made (file changed))")
    assert tree(speech / "ev") == before and rows.read_bytes() == finished  # byte for byte, nothing added
    # --overwrite starts over with the new inputs (only after they were checked: a bad row keeps the old).
    fails(capsys, [*ev, "--model", "run/model", "--data", "run/broken.jsonl", "--overwrite"], "cannot read audio")
    assert tree(speech / "ev") == before
    ok([*ev, "--model", "run/model", "--data", "run/b.jsonl", "--overwrite"])
    again = rows.read_bytes()
    assert [json.loads(x)["ref"] for x in again.decode().splitlines()][0] == "HELLO THERE"
    ok([*ev, "--model", "run/model", "--data", "run/b.jsonl"])  # the same inputs: resumed, the same rows
    assert rows.read_bytes() == again
    # The whole folder copied elsewhere, then interrupted as a kill leaves it (first row written, a torn
    # second, no merged file): the copy resumes (same content, other paths) to the same rows.
    shutil.copytree(speech, speech.parent / "copy", symlinks=True)
    copy = speech.parent / "copy" / "ev" / "model"
    first = again.decode().splitlines()[0]
    (copy / "utterances.jsonl").unlink()
    (copy / "utterances.jsonl.rank0of1.partial").write_text(first + "\n" + '{"id": "u1", "ref": "GO')
    ok(["eval", "--wer", "--quiet", "--device", "cpu", "--out", "copy/ev", "--model", "copy/model",
        "--data", "copy/b.jsonl"])
    assert (copy / "utterances.jsonl").read_bytes() == again
    assert not list(copy.glob("utterances.jsonl.rank*"))


def test_asr_eval_leaves_nothing_after_a_clean_error(speech, capsys):
    (speech / "empty.jsonl").write_text("")
    fails(capsys, ["eval", "--wer", "--model", "run/model", "--data", "run/empty.jsonl", "--out", "run/e1"],
          "empty.jsonl: no records")
    broken = speech / "broken"
    broken.mkdir()
    for p in (speech / "model").iterdir():
        if p.name != "model.safetensors":
            (broken / p.name).symlink_to(p.resolve())
    weights = (speech / "model" / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    fails(capsys, ["eval", "--wer", "--model", "run/broken", "--data", "run/a.jsonl", "--out", "run/e2",
                   "--device", "cpu"], "cannot load model")
    assert not (speech / "e1").exists() and not (speech / "e2").exists()


# --------------------------------------------------------------------------------------- ASR build-pairs

def test_asr_build_pairs_reruns_cannot_mix(speech, capsys):
    bp = ["build-pairs", ASR_RECIPE, "model.path=run/model", "build_pairs.manifest=run/a.jsonl",
          "build_pairs.work_dir=run/work", "data.pairs=run/work/pairs.jsonl", "build_pairs.perturbations=2",
          "runtime.device=cpu", "--quiet"]
    ok(bp)
    work = speech / "work"
    candidates = (work / "candidates.jsonl").read_bytes()
    before = tree(work)
    fails(capsys, [*bp, "build_pairs.manifest=run/broken.jsonl"], "broken.wav: cannot read audio")
    fails(capsys, [*bp, "build_pairs.manifest=run/b.jsonl"],
          "run/work/candidates.jsonl: was made with other settings (manifest run/a.jsonl -> run/b.jsonl")
    variant(speech / "model", speech / "other")
    fails(capsys, [*bp, "model.path=run/other"], "(model run/model -> run/other (another model folder")
    fails(capsys, [*bp, "build_pairs.perturbations=3"], "(perturbations 2 -> 3)")
    fails(capsys, [*bp, "build_pairs.manifest=run/broken.jsonl", "--overwrite"], "cannot read audio")
    assert tree(work) == before
    # The selection rules may change freely: they run again over the stored candidates.
    ok([*bp, "build_pairs.min_margin=0.5"])
    assert (work / "candidates.jsonl").read_bytes() == candidates
    ok([*bp, "build_pairs.manifest=run/b.jsonl", "--overwrite"])
    assert [json.loads(x)["reference"] for x in (work / "candidates.jsonl").read_text().splitlines()][0] == "HELLO THERE"
    ok([*bp, "build_pairs.manifest=run/b.jsonl"])  # identical inputs: resumed
    candidates = (work / "candidates.jsonl").read_bytes()
    # A copy of the folder elsewhere (model, manifests, work_dir) resumes: same content, other paths.
    shutil.copytree(speech, speech.parent / "copy", symlinks=True)
    ok(["build-pairs", ASR_RECIPE, "model.path=copy/model", "build_pairs.manifest=copy/b.jsonl",
        "build_pairs.work_dir=copy/work", "data.pairs=copy/work/pairs.jsonl", "build_pairs.perturbations=2",
        "runtime.device=cpu", "--quiet"])
    assert (speech.parent / "copy" / "work" / "candidates.jsonl").read_bytes() == candidates
    # A bad manifest into a fresh work_dir leaves nothing (it used to leave work/runtime.json).
    fails(capsys, [*bp, "build_pairs.manifest=run/broken.jsonl", "build_pairs.work_dir=run/w2"], "cannot read audio")
    assert not (speech / "w2").exists()


# ------------------------------------------------------------------------------------------ ref-logps

@pytest.fixture
def pairs_world(toy_world, monkeypatch) -> Path:
    monkeypatch.chdir(toy_world)
    lines = (toy_world / "pairs.jsonl").read_text().splitlines(keepends=True)
    (toy_world / "pairs_b.jsonl").write_text("".join(lines[:20]))
    return toy_world


def test_ref_logps_reruns_cannot_mix_and_copies_resume(pairs_world, capsys, monkeypatch):
    rl = ["ref-logps", "recipe.yaml", "--in", "pairs.jsonl", "--out", "out/ref.jsonl", "--quiet"]
    ok(rl)
    out = pairs_world / "out" / "ref.jsonl"
    finished, before = out.read_bytes(), tree(pairs_world / "out")
    assert sorted(before) == ["ref.jsonl", "ref.jsonl.settings.json"]  # the scored intermediate is gone
    fails(capsys, [*rl[:3], "pairs_b.jsonl", *rl[4:]], "out/ref.jsonl: was made with other settings "
          "(pairs pairs.jsonl -> pairs_b.jsonl (another file: other content))", "pass --overwrite")
    other = make_tiny_llama(pairs_world / "other", seed=1)
    fails(capsys, [*rl, f"model.path={other}"], "(model ", " -> other (another model folder: other content))")
    fails(capsys, [*rl, "--max-margin", "0.5"], "(max_margin None -> 0.5)")
    fails(capsys, [*rl, "loss.average_logps=false"], "(mode 'mean/flat' -> 'sum/flat')")
    assert tree(pairs_world / "out") == before and out.read_bytes() == finished
    ok([*rl[:3], "pairs_b.jsonl", *rl[4:], "--overwrite"])
    assert len(out.read_text().splitlines()) == 20
    ok(rl + ["--overwrite"])
    assert out.read_bytes() == finished  # the same inputs give the same rows
    ok(rl)
    assert out.read_bytes() == finished
    # A copy of the folder elsewhere (recipe, pairs, output) reruns without objection.
    copy = pairs_world.parent / (pairs_world.name + "-copy")
    shutil.copytree(pairs_world, copy)
    monkeypatch.chdir(copy)
    ok(rl)
    assert (copy / "out" / "ref.jsonl").read_bytes() == finished


def test_ref_logps_interrupted_resumes_to_the_same_rows(pairs_world, capsys, monkeypatch):
    import lpo_speech.reflogps as reflogps

    rl = ["ref-logps", "recipe.yaml", "--in", "pairs.jsonl", "--quiet", "--batch-size", "4"]
    ok([*rl, "--out", "whole.jsonl"])
    real, calls = reflogps.adapter_disabled, []

    def interrupted(model):  # Ctrl-C at the third batch, after two were written
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model)

    monkeypatch.setattr(reflogps, "adapter_disabled", interrupted)
    assert main([*rl, "--out", "cut.jsonl"]) == 130
    monkeypatch.setattr(reflogps, "adapter_disabled", real)
    partial = pairs_world / "cut.jsonl.scored.rank0of1.partial"
    assert len(partial.read_text().splitlines()) == 8 and not (pairs_world / "cut.jsonl").exists()
    with partial.open("a") as f:
        f.write('{"id": "p9", "prompt_tok')  # the torn line a kill mid-write leaves
    ok([*rl, "--out", "cut.jsonl"])
    assert (pairs_world / "cut.jsonl").read_bytes() == (pairs_world / "whole.jsonl").read_bytes()
    assert sorted(p.name for p in pairs_world.glob("cut.jsonl*")) == ["cut.jsonl", "cut.jsonl.settings.json"]


def test_ref_logps_checks_every_audio_before_writing(tmp_path, monkeypatch, capsys, whisper_tiny):
    monkeypatch.chdir(tmp_path)
    espeak_wav(tmp_path / "ok.wav", "hello world")
    audio = (0.1 * np.sin(np.arange(16_000) / 7)).astype(np.float32)
    audio[800] = np.nan
    sf.write(tmp_path / "nan.wav", audio, 16_000, subtype="FLOAT")
    (tmp_path / "pairs.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "audio": a, "chosen_text": "hello world", "rejected_text": "hello word"}) + "\n"
        for i, a in enumerate(["ok.wav", "ok.wav", "nan.wav"])))
    (tmp_path / "r.yaml").write_text(f"model: {{path: {whisper_tiny}, adapter: whisper}}\ndata: {{pairs: pairs.jsonl}}\n"
                                     "train: {out_dir: run}\n")
    fails(capsys, ["ref-logps", "r.yaml", "--in", "pairs.jsonl", "--out", "out/ref.jsonl", "--quiet"],
          "error: pairs.jsonl:3: nan.wav: 1 non-finite samples")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.wav", "ok.wav", "pairs.jsonl", "r.yaml"]


# --------------------------------------------------------------------------------------------- TTS

def test_tts_eval_reruns_cannot_mix(tts_world, tts_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "x", "text": "Hello there."}) + "\n")
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "x", "text": "Good morning."}) + "\n")
    ev = ["eval", "--wer", "--out", "ev", "--no-dnsmos", "--max-seconds", "0.4", "--quiet", "--threads", "1",
          "--sampling-threads", "1", "--device", "cpu", "--label", "m"]
    ok([*ev, "--model", tts_model, "--data", "p.jsonl"])
    before = tree(tmp_path / "ev")
    assert "m/wavs/x.wav" in before
    fails(capsys, [*ev, "--model", tts_model, "--data", "q.jsonl"],
          "ev/m/utterances.jsonl: was made with other settings (data p.jsonl -> q.jsonl (another file: other content))")
    variant(Path(tts_model), tmp_path / "other")
    fails(capsys, [*ev, "--model", "other", "--data", "p.jsonl"], " -> other (another model folder: other content))")
    fails(capsys, [*ev, "--model", tts_model, "--data", "p.jsonl", "--max-seconds", "0.5"], "(max_seconds 0.4 -> 0.5)")
    assert tree(tmp_path / "ev") == before
    ok([*ev, "--model", tts_model, "--data", "q.jsonl", "--overwrite"])
    rows = (tmp_path / "ev" / "m" / "utterances.jsonl").read_bytes()
    (row,) = [json.loads(x) for x in rows.decode().splitlines()]
    assert row["text"] == "Good morning." and (tmp_path / "ev" / "m" / "wavs" / "x.wav").is_file()
    ok([*ev, "--model", tts_model, "--data", "q.jsonl"])  # the same inputs: resumed, the same row
    assert (tmp_path / "ev" / "m" / "utterances.jsonl").read_bytes() == rows


def test_tts_build_pairs_interrupted_resumes_and_reruns_cannot_mix(tts_world, tts_model, tmp_path, monkeypatch,
                                                                   capsys):
    import lpo_speech.tts.synthesize as synthesize_module

    out, _ = tts_world
    monkeypatch.chdir(tmp_path)
    # Gold chosen, two samples per prompt, no judge: deterministic candidates (seeded per prompt, one
    # prompt per unit of work), so an interrupted run must end with exactly the uninterrupted file.
    (tmp_path / "r.yaml").write_text(f"""
track: tts
model: {{path: {tts_model}, adapter: causal_lm, num_codebooks: 4}}
data: {{pairs: work/pairs.jsonl, max_length: 512}}
build_pairs: {{prompts: {out}/train_prompts.jsonl, gold: {out}/train.jsonl, work_dir: work, limit: 3,
  samples: 2, max_seconds: 0.3, chosen: gold, judge: null, keys: [], min_margins: {{}}, max_chosen_cer: null,
  chosen_stable: false, similarity: false, pairs_per_prompt: 2, prompts_per_shard_step: 1}}
reference: {{source: model}}
loss: {{type: lpo-ste}}
train: {{out_dir: run, max_steps: 1, batch_size: 2}}
runtime: {{device: cpu, sampling_threads: 1}}
""")
    bp = ["build-pairs", "r.yaml", "--quiet"]
    ok([*bp, "build_pairs.work_dir=whole", "data.pairs=whole/pairs.jsonl"])
    real, calls = synthesize_module.synthesize, []

    def interrupted(*args, **kw):  # Ctrl-C while sampling the second prompt
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(synthesize_module, "synthesize", interrupted)
    assert main([*bp]) == 130
    monkeypatch.setattr(synthesize_module, "synthesize", real)
    partial = tmp_path / "work" / "candidates.jsonl.rank0of1.partial"
    assert len(partial.read_text().splitlines()) == 1
    with partial.open("a") as f:
        f.write('{"id": "train-00001", "te')  # the torn line a kill mid-write leaves
    ok(bp)
    assert (tmp_path / "work" / "candidates.jsonl").read_bytes() == (tmp_path / "whole" / "candidates.jsonl").read_bytes()
    before = tree(tmp_path / "work")
    (tmp_path / "prompts2.jsonl").write_text((out / "train_prompts.jsonl").read_text() + "\n")
    fails(capsys, [*bp, "build_pairs.prompts=prompts2.jsonl"],
          "work/candidates.jsonl: was made with other settings (prompts ", " -> prompts2.jsonl (another file")
    fails(capsys, [*bp, "build_pairs.seed=1"], "(seed 0 -> 1)")
    variant(Path(tts_model), tmp_path / "other")
    fails(capsys, [*bp, "model.path=other"], "(another model folder: other content)")
    assert tree(tmp_path / "work") == before
    ok([*bp, "build_pairs.seed=1", "--overwrite"])
    assert (tmp_path / "work" / "candidates.jsonl").read_bytes() != (tmp_path / "whole" / "candidates.jsonl").read_bytes()
