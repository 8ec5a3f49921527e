"""The ASR track end to end through the CLI, on real speech and the real Whisper tiny.en (tiny sizes),
plus its bad-input and resume guarantees, and the hub recipe's loading path on a tiny local model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, espeak_wav

RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"


@pytest.fixture(scope="module")
def asr_data(tmp_path_factory) -> Path:
    from lpo_speech.synthetic.synth import make_asr_data

    out = tmp_path_factory.mktemp("asr") / "data"
    make_asr_data(out, n_train=5, n_test=3, styles=["espeak"], workers=1, progress=False)
    return out


def overrides(root: Path, model: Path, data: Path) -> list[str]:
    return [f"model.path={model}", f"build_pairs.manifest={data / 'train.jsonl'}", f"build_pairs.work_dir={root / 'pairs'}",
            f"data.pairs={root / 'pairs' / 'pairs.jsonl'}", f"train.out_dir={root / 'lpo'}", "build_pairs.batch_size=4",
            "train.batch_size=2", "train.max_steps=2", "train.warmup_steps=0", "train.log_every=1"]


def lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_build_pairs_train_eval(tmp_path, lpo, whisper_tiny, asr_data):
    ov = overrides(tmp_path, whisper_tiny, asr_data)
    ov += ["build_pairs.greedy=true", "reference.source=precomputed",  # the full path: decoding + stored log-probs
           f"data.pairs={tmp_path / 'pairs' / 'pairs_ref.jsonl'}"]
    out = lpo("build-pairs", str(RECIPE), *ov, "build_pairs.perturbations=2", "runtime.device=cpu",
              "runtime.threads=1", "--quiet", cwd=tmp_path)
    runtime = json.loads((tmp_path / "pairs" / "runtime.json").read_text())  # the stage asked the placement rule
    assert runtime["stage"] == "build-pairs" and runtime["devices"][0].startswith("cpu")
    assert runtime["weights"] == "float32" and runtime["threads"] == 1  # runtime.threads, set at the stage's start
    summary = json.loads((tmp_path / "pairs" / "summary.json").read_text())
    assert summary["utterances"] == 5 and summary["candidates_by_source"]["perturb"] == 10
    assert summary["candidates_by_source"]["greedy"] == 5 and summary["pairs_written"] >= 10
    pairs = lines(tmp_path / "pairs" / "pairs_ref.jsonl")
    refs = {u["id"]: u["text"] for u in lines(asr_data / "train.jsonl")}
    for p in pairs:
        assert p["chosen_text"] == refs[p["prompt_id"]] and p["rejected_scores"]["wer"] > 0
        assert (tmp_path / "pairs" / p["audio"]).is_file()
        assert p["ref_chosen_logp"] > p["ref_rejected_logp"] - 5  # a sane log-prob, not a placeholder
    said = out.stdout.strip().splitlines()[-1]  # one summary line: what the stage did with what
    assert said.startswith(f"build-pairs: 5 utterances; model {whisper_tiny} loaded (candidates, reference log-probs)")
    assert f"pairs written with reference log-probs to {tmp_path / 'pairs' / 'pairs_ref.jsonl'}" in said

    lpo("train", str(RECIPE), *ov, "--quiet", cwd=tmp_path)
    rows = lines(tmp_path / "lpo" / "metrics.jsonl")
    assert len(rows) == 2 and rows[0]["x1"] == pytest.approx(0.0, abs=1e-3)  # policy starts at the reference
    assert (tmp_path / "lpo" / "model" / "preprocessor_config.json").exists() or \
        (tmp_path / "lpo" / "model" / "processor_config.json").exists()

    out = lpo("eval", "--wer", "--model", str(whisper_tiny), "--model", str(tmp_path / "lpo" / "model"),
              "--label", "base", "--label", "lpo", "--data", str(asr_data / "test.jsonl"), "--out", "ev", "--quiet",
              cwd=tmp_path)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) == {"base", "lpo"}
    for m in metrics.values():
        assert m["n"] == 3 and {"wer", "cer", "wer_utt_mean"} <= set(m) and 0 <= m["wer"] < 1
    utts = lines(tmp_path / "ev" / "base" / "utterances.jsonl")
    assert [u["id"] for u in utts] == [u["id"] for u in lines(asr_data / "test.jsonl")]
    assert "| base |" in out.stdout and "| lpo |" in out.stdout
    assert json.loads((tmp_path / "ev" / "runtime.json").read_text())["stage"] == "eval"
    # lpo against base, utterance by utterance: the change is the difference of the corpus rates
    vs = metrics["lpo"]["vs_base"]
    assert "vs_base" not in metrics["base"] and vs["n"] == 3 and vs["words"] == metrics["base"]["words"]
    assert vs["delta_wer"] == pytest.approx(metrics["lpo"]["wer"] - metrics["base"]["wer"])
    assert vs["ci95"][0] <= vs["delta_wer"] <= vs["ci95"][1] and 0 <= vs["p_sign"] <= 1
    table = (tmp_path / "ev" / "table.md").read_text()
    assert table == out.stdout and table.splitlines()[0].endswith("| n | vs base |")
    assert f"`{asr_data / 'test.jsonl'}`: 3 utterances, {vs['words']} words." in table

    # export: the run as a hub-ready folder that loads alone, with the recipe and the eval table in its card
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    out = lpo("export", str(tmp_path / "lpo"), "hub-ready", "--eval", "ev", cwd=tmp_path)
    card = (tmp_path / "hub-ready" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: automatic-speech-recognition\n")
    assert "| lpo |" in card and "type: lpo-ste" in card and "![training curves](training_curves.png)" in card
    assert (tmp_path / "hub-ready" / "training_curves.png").is_file()
    exported = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hub-ready")
    trained = WhisperForConditionalGeneration.from_pretrained(tmp_path / "lpo" / "model")
    assert all((a == b).all() for a, b in zip(exported.state_dict().values(), trained.state_dict().values()))
    assert AutoProcessor.from_pretrained(tmp_path / "hub-ready").tokenizer is not None
    again = lpo("export", str(tmp_path / "lpo"), "hub-ready", cwd=tmp_path, check=False)
    assert again.returncode == 2 and again.stderr.strip() == (
        "error: hub-ready: exists and is not empty (pass --overwrite to replace it)")
    missing = lpo("export", str(tmp_path / "pairs"), "other", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "no model/ folder" in missing.stderr and not (tmp_path / "other").exists()


@pytest.mark.slow
def test_eval_shards_across_processes_with_the_same_result(tmp_path, whisper_tiny, asr_data):
    """`torchrun --nproc_per_node 2 ... eval` of an ASR model (gloo, CPU) splits the utterances and
    writes what one process writes; the second label (the same encoder) reuses the cached states."""
    ev = [sys.executable, "-m", "lpo_speech.cli", "eval", "--wer", "--model", str(whisper_tiny), "--model",
          str(whisper_tiny), "--label", "a", "--label", "b", "--data", str(asr_data / "test.jsonl"), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run([*ev, "--out", str(tmp_path / "one")], cwd=tmp_path, env=env, check=True, capture_output=True)
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *ev[1:]]
    proc = subprocess.run([*two, "--out", str(tmp_path / "two")], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("a", "b"):
        one = (tmp_path / "one" / label / "utterances.jsonl").read_text()
        assert (tmp_path / "two" / label / "utterances.jsonl").read_text() == one and one.count("\n") == 3
        assert not list((tmp_path / "two" / label).glob("utterances.jsonl.rank*"))  # parts merged and removed
    assert json.loads((tmp_path / "two" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "one" / "metrics.json").read_text())
    runtime = json.loads((tmp_path / "two" / "runtime.json").read_text())
    assert runtime["processes"] == 2 and len(runtime["devices"]) == 2


@pytest.mark.parametrize("line, expected", [
    ('{"id": "x", "audio": "wavs/none.wav", "text": "hi"}', "none.wav: audio file not found"),
    ('{"id": "x", "audio": "wavs/bad.wav", "text": "hi"}', "bad.wav: cannot read audio"),
    ('{"id": "x", "audio": "wavs/ok.wav", "text": ""}', "m.jsonl:2: field 'text': empty"),
    ('{"id": "x", "audio": "wavs/ok.wav", "text": "hi"', "m.jsonl:2: malformed JSON"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, lpo, whisper_tiny, line, expected):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    espeak_wav(wavs / "ok.wav", "hello there")
    (wavs / "bad.wav").write_bytes(os.urandom(2000))
    (tmp_path / "m.jsonl").write_text('{"id": "ok", "audio": "wavs/ok.wav", "text": "hello there"}\n' + line + "\n")
    ov = overrides(tmp_path, whisper_tiny, tmp_path)
    proc = lpo("build-pairs", str(RECIPE), *ov, f"build_pairs.manifest={tmp_path / 'm.jsonl'}", "--quiet",
               cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "Traceback" not in proc.stderr


def test_interrupted_build_pairs_resumes_without_duplicates(tmp_path, whisper_tiny, asr_data):
    ov = overrides(tmp_path, whisper_tiny, asr_data) + ["build_pairs.batch_size=1", "build_pairs.greedy=true"]
    args = [sys.executable, "-m", "lpo_speech.cli", "build-pairs", str(RECIPE), *ov, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    partial = tmp_path / "pairs" / "candidates.jsonl.rank0of1.partial"  # this rank's in-progress part
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if partial.exists() and partial.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = partial.read_text().count("\n") if partial.exists() else 0
    assert 1 <= done_before < 5, "the stage was not interrupted mid-way"
    subprocess.run(args, cwd=tmp_path, env=env, check=True, capture_output=True)
    ids = [r["id"] for r in lines(tmp_path / "pairs" / "candidates.jsonl")]
    assert ids == [u["id"] for u in lines(asr_data / "train.jsonl")]  # each once, in manifest order
    assert not partial.exists()
    pair_ids = [p["id"] for p in lines(tmp_path / "pairs" / "pairs.jsonl")]
    assert len(pair_ids) == len(set(pair_ids)) > 0


def test_hub_recipe_loads_a_local_checkpoint_of_the_same_class(tmp_path, lpo, whisper_tiny, asr_data):
    """recipes/asr/whisper.yaml names openai/whisper-small; its code path runs on a tiny random
    WhisperForConditionalGeneration of the same class with a multilingual-style prompt (en, transcribe)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    proc = WhisperProcessor.from_pretrained(whisper_tiny)
    cfg = WhisperConfig(vocab_size=len(proc.tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
                        decoder_start_token_id=50257, pad_token_id=50256, eos_token_id=50256)
    torch.manual_seed(0)
    local = tmp_path / "whisper-small-tiny"
    WhisperForConditionalGeneration(cfg).save_pretrained(local)
    proc.save_pretrained(local)
    hub = REPO / "recipes" / "asr" / "whisper.yaml"
    ov = overrides(tmp_path, local, asr_data) + ["build_pairs.greedy=false", "build_pairs.samples=0",
                                                 "reference.source=model", "build_pairs.max_ref_margin=null"]
    lpo("build-pairs", str(hub), *ov, "--quiet", cwd=tmp_path)
    lpo("train", str(hub), *ov, "--quiet", cwd=tmp_path)
    assert len(lines(tmp_path / "lpo" / "metrics.jsonl")) == 2
    saved = WhisperProcessor.from_pretrained(tmp_path / "lpo" / "model")
    saved.tokenizer.set_prefix_tokens(language="en", task="transcribe", predict_timestamps=False)
    assert saved.tokenizer.convert_ids_to_tokens(saved.tokenizer.prefix_tokens) == [
        "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def test_other_rates_and_stereo_are_converted_not_refused(tmp_path, lpo, whisper_tiny):
    """8 kHz stereo and 44.1 kHz speech go through build-pairs and eval: each kind of conversion is said
    in one line, and the transcripts are those of the same audio converted beforehand by hand."""
    import numpy as np
    import soundfile as sf
    import soxr

    texts = ["turn the kitchen lights off", "the farmer sings twice a week"]
    (tmp_path / "wavs").mkdir()
    rows16, rows_conv = [], []
    for i, t in enumerate(texts):
        audio, _ = sf.read(str(espeak_wav(tmp_path / "wavs" / f"s{i}.wav", t)), dtype="float32")
        sr = 8000 if i == 0 else 44100
        other = soxr.resample(audio, 16000, sr).astype(np.float32)
        left, right = other, 0.5 * other  # two channels (8 kHz), or mono (44.1 kHz)
        sf.write(tmp_path / "wavs" / f"c{i}.wav", np.stack([left, right], axis=1) if i == 0 else other, sr,
                 subtype="FLOAT")
        by_hand = (left + right) / 2 if i == 0 else other
        sf.write(tmp_path / "wavs" / f"u{i}.wav", soxr.resample(by_hand, sr, 16000, quality="HQ"), 16000,
                 subtype="FLOAT")
        rows16.append({"id": f"u{i}", "audio": f"wavs/u{i}.wav", "text": t})
        rows_conv.append({"id": f"u{i}", "audio": f"wavs/c{i}.wav", "text": t})
    for name, rows in (("m16.jsonl", rows16), ("conv.jsonl", rows_conv)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    ov = overrides(tmp_path, whisper_tiny, tmp_path) + [f"build_pairs.manifest={tmp_path / 'conv.jsonl'}"]
    res = lpo("build-pairs", str(RECIPE), *ov, "--quiet", cwd=tmp_path)
    said = [l for l in res.stderr.splitlines() if l.startswith("audio: converting")]
    assert len(said) == 2 and "8000 Hz 2 channels to 16000 Hz mono" in said[0] and "44100 Hz mono" in said[1]
    assert lines(tmp_path / "pairs" / "pairs.jsonl")
    res = lpo("eval", "--wer", "--model", str(whisper_tiny), "--data", "conv.jsonl", "--out", "ev-conv", "--quiet",
              cwd=tmp_path)
    assert sum(l.startswith("audio: converting") for l in res.stderr.splitlines()) == 2
    lpo("eval", "--wer", "--model", str(whisper_tiny), "--data", "m16.jsonl", "--out", "ev-16", "--quiet", cwd=tmp_path)
    conv = lines(tmp_path / "ev-conv" / whisper_tiny.name / "utterances.jsonl")
    base = lines(tmp_path / "ev-16" / whisper_tiny.name / "utterances.jsonl")
    assert [r["hyp"] for r in conv] == [r["hyp"] for r in base]


def test_eval_on_several_sets_shows_each_sets_change_side_by_side(tmp_path, lpo, whisper_tiny, asr_data):
    """`--data NAME=PATH` twice: each set is its own eval folder, and the top table puts every set's
    rate and its ratio to the baseline side by side (the forgetting check)."""
    out = lpo("eval", "--wer", "--model", str(whisper_tiny), "--model", str(whisper_tiny), "--label", "base",
              "--label", "again", "--data", f"in-domain={asr_data / 'test.jsonl'}",
              "--data", f"out-of-domain={asr_data / 'train.jsonl'}", "--out", "ev", "--quiet", cwd=tmp_path)
    both = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(both) == {"in-domain", "out-of-domain"} and both["in-domain"]["base"]["n"] == 3
    assert both["out-of-domain"]["again"]["n"] == 5
    assert (tmp_path / "ev" / "in-domain" / "base" / "utterances.jsonl").is_file()
    head = out.stdout.splitlines()[0]
    assert head == "| model | in-domain wer | in-domain vs base | out-of-domain wer | out-of-domain vs base |"
    # the same model twice: no change, said as such (in the top table and in each set's own)
    same = "0 errors, +0.0000 [+0.0000, +0.0000]: within noise"
    assert out.stdout.splitlines()[2].startswith("| base | ") and out.stdout.count("| baseline |") == 4
    assert out.stdout.count(same + " (3 utterances)") == 2 and out.stdout.count(same + " (5 utterances)") == 2
    vs = both["in-domain"]["again"]["vs_base"]
    assert vs["delta_wer"] == 0 and vs["ci95"] == [0, 0] and vs["p_sign"] == 1 and vs["n"] == 3
    words = {name: both[name]["base"]["words"] for name in both}
    assert (f"in-domain (`{asr_data / 'test.jsonl'}`): 3 utterances, {words['in-domain']} words; "
            f"out-of-domain (`{asr_data / 'train.jsonl'}`): 5 utterances, {words['out-of-domain']} words.") in out.stdout
    assert out.stdout == (tmp_path / "ev" / "table.md").read_text()
    dup = lpo("eval", "--wer", "--model", str(whisper_tiny), "--data", "a/test.jsonl", "--data", "b/test.jsonl",
              "--out", "ev2", cwd=tmp_path, check=False)
    assert dup.returncode == 2 and "two sets named 'test'" in dup.stderr and not (tmp_path / "ev2").exists()


def test_one_named_set_gets_its_own_folder_as_help_says(tmp_path, lpo, whisper_tiny, asr_data):
    """`--data test=PATH`: OUT/test/<label>/ as `eval --help` says, and the table names the set."""
    said = " ".join(lpo("eval", "--help", cwd=tmp_path).stdout.split())
    assert "A named set (NAME=DATA) goes to OUT/NAME/ (each model in OUT/NAME/LABEL/)" in said
    assert "One unnamed set (--data DATA) writes OUT/LABEL/ and OUT/table.md" in said
    wrong = lpo("eval", "--wer", "--model", str(whisper_tiny), "--label", "base", "--baseline", "sft",
                "--data", f"test={asr_data / 'test.jsonl'}", "--out", "ev0", cwd=tmp_path, check=False)
    assert wrong.returncode == 2 and "--baseline 'sft': not one of the labels (base)" in wrong.stderr
    assert not (tmp_path / "ev0").exists()  # stopped before anything was scored
    out = lpo("eval", "--wer", "--model", str(whisper_tiny), "--label", "base", "--data",
              f"test={asr_data / 'test.jsonl'}", "--out", "ev", "--quiet", cwd=tmp_path)
    assert (tmp_path / "ev" / "test" / "base" / "utterances.jsonl").is_file()
    assert not (tmp_path / "ev" / "base").exists()
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(m) == {"test"} and m["test"]["base"]["n"] == 3
    table = (tmp_path / "ev" / "table.md").read_text()
    assert table == out.stdout and table.splitlines()[0] == "| model | test wer |"
    words = m["test"]["base"]["words"]
    assert f"test (`{asr_data / 'test.jsonl'}`): 3 utterances, {words} words." in table
    assert f"test (`{asr_data / 'test.jsonl'}`): 3 utterances, {words} words." in (
        tmp_path / "ev" / "test" / "table.md").read_text()


def test_comparison_table_hand_worked():
    from lpo_speech.evaluate import comparison_table

    by_set = {"in": {"sft": {"wer": 0.20}, "lpo": {"wer": 0.10}},
              "ood": {"sft": {"wer": 0.40}, "lpo": {"wer": 0.50}}}
    rows = comparison_table(by_set, "sft").splitlines()
    assert rows[2] == "| sft | 0.2000 | baseline | 0.4000 | baseline |"
    # no utterance-by-utterance comparison in these metrics: the ratio of the rates
    assert rows[3] == "| lpo | 0.1000 | x0.500 | 0.5000 | x1.250 |"  # wins in domain, forgets out of domain
