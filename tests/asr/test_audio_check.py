"""Audio checked against its text (lpo_speech.asr.audio_check): before build-pairs makes a pair or eval
scores a transcript, a line whose audio is longer than the model hears (Whisper: 30 s) or holds far less
speech (Silero VAD) than its transcript takes is refused in one line naming `file:line` and the field,
exit 2, nothing left behind; `--skip-bad` leaves such lines out, counts them and goes on with the rest.
In-process CLI runs on real speech (espeak-ng) and Whisper tiny.en, a few seconds each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, espeak_wav
from lpo_speech.cli import main

RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"
OK = ["turn the kitchen lights off", "the farmer sings twice a week"]
LONG_TEXT = ("the farmer sings twice a week while the kitchen lights stay off, and the garden is quiet "
             "tonight after the rain has stopped")  # 100 letters: 3.3 s of speech even at 30 letters/s


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> Path:
    """ok0/ok1.wav: espeak sentences (OK); silent.wav: 20 s of faint noise; long.wav: 35 s of speech
    (ok0 said over and over); ten_min.wav: 10 minutes of silence."""
    d = tmp_path_factory.mktemp("check")
    for i, text in enumerate(OK):
        espeak_wav(d / f"ok{i}.wav", text)
    rng = np.random.default_rng(0)
    sf.write(d / "silent.wav", (1e-3 * rng.standard_normal(20 * 16_000)).astype(np.float32), 16_000)
    said, _ = sf.read(str(d / "ok0.wav"), dtype="float32")
    gap = np.zeros(8_000, np.float32)
    reps = int(np.ceil(35 * 16_000 / (len(said) + len(gap))))
    sf.write(d / "long.wav", np.tile(np.concatenate([said, gap]), reps)[:35 * 16_000], 16_000)
    sf.write(d / "ten_min.wav", np.zeros(600 * 16_000, np.int16), 16_000, subtype="PCM_16")
    return d


BAD = {  # audio, transcript, what the line says
    "silent": ("silent.wav", LONG_TEXT, "silent.wav holds 0.0 s of speech (Silero VAD) in 20.0 s, but its transcript "
                                        "(100 letters/digits) takes at least 3.3 s even spoken fast"),
    "too long": ("long.wav", " ".join([OK[0]] * 14), "long.wav is 35.0 s long, longer than the 30 s the model hears"),
}


def manifest(root: Path, wavs: Path, rows: list[tuple[str, str]]) -> Path:
    (root / "wavs").mkdir(exist_ok=True)
    with (root / "m.jsonl").open("w") as f:
        for i, (name, text) in enumerate(rows):
            if not (root / "wavs" / name).exists():
                (root / "wavs" / name).symlink_to(wavs / name)
            f.write(json.dumps({"id": f"u{i}", "audio": f"wavs/{name}", "text": text}) + "\n")
    return root / "m.jsonl"


def build_pairs_args(whisper_tiny: Path) -> list[str]:
    return ["build-pairs", str(RECIPE), f"model.path={whisper_tiny}", "build_pairs.manifest=m.jsonl",
            "build_pairs.work_dir=work", "data.pairs=work/pairs.jsonl", "train.out_dir=run",
            "runtime.device=cpu", "--quiet"]


def eval_args(whisper_tiny: Path) -> list[str]:
    return ["eval", "--wer", "--model", str(whisper_tiny), "--data", "m.jsonl", "--out", "ev", "--quiet"]


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["build-pairs", "eval"])
def test_audio_that_cannot_carry_its_text_is_one_line_exit_2(tmp_path, monkeypatch, capsys, whisper_tiny, wavs,
                                                             command, case):
    monkeypatch.chdir(tmp_path)
    name, text, says = BAD[case]
    manifest(tmp_path, wavs, [("ok0.wav", OK[0]), (name, text), ("ok1.wav", OK[1])])
    before = snapshot(tmp_path)
    rc = main(build_pairs_args(whisper_tiny) if command == "build-pairs" else eval_args(whisper_tiny))
    out, err = capsys.readouterr()
    assert rc == 2, err[-2000:]
    assert err.count("\n") == 1 and "Traceback" not in err + out, err
    assert err.startswith("error: m.jsonl:2: field 'audio': wavs/") and says in err, err
    assert err.rstrip().endswith("(--skip-bad leaves such lines out)"), err
    assert snapshot(tmp_path) == before  # no work/, features, ev/ left behind


def test_skip_bad_leaves_them_out_counts_them_and_goes_on(tmp_path, monkeypatch, capsys, whisper_tiny, wavs):
    monkeypatch.chdir(tmp_path)
    rows = [("ok0.wav", OK[0]), BAD["silent"][:2], ("ok1.wav", OK[1]), BAD["too long"][:2],
            ("ten_min.wav", OK[1])]  # a 10-minute silent file with a transcript
    manifest(tmp_path, wavs, rows)
    rc = main(build_pairs_args(whisper_tiny))  # without the flag: the first bad line, and how many there are
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: m.jsonl:2: field 'audio': ") and "(3 such lines in all; --skip-bad leaves them out)" in err

    assert main([*build_pairs_args(whisper_tiny), "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert summary["utterances"] == 2 and summary["skipped"] == 3 and "2 utterances (3 skipped: --skip-bad)" in out
    assert "build-pairs: --skip-bad left out 3 of 5 utterances" in err
    assert "m.jsonl:2: field 'audio'" in err and "m.jsonl:4: field 'audio'" in err and "m.jsonl:5: field" in err
    cands = [json.loads(l)["id"] for l in (tmp_path / "work" / "candidates.jsonl").read_text().splitlines()]
    pairs = [json.loads(l) for l in (tmp_path / "work" / "pairs.jsonl").read_text().splitlines()]
    assert cands == ["u0", "u2"] and pairs and {p["prompt_id"] for p in pairs} == {"u0", "u2"}

    assert main([*eval_args(whisper_tiny), "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 2 and metrics["skipped"] == 3 and metrics["wer"] < 0.5
    utts = [json.loads(l)["id"] for l in (tmp_path / "ev" / whisper_tiny.name / "utterances.jsonl").read_text().splitlines()]
    assert utts == ["u0", "u2"]
    head, _, row = out.splitlines()[:3]
    assert head.endswith("| n | skipped |") and row.endswith("| 2 | 3 |")
    assert "eval: --skip-bad left out 3 of 5 utterances" in err


def test_a_dataset_row_is_named_as_its_conversion_names_it(tmp_path, monkeypatch, capsys, whisper_tiny, wavs):
    """The check reads the manifest a dataset was converted into; its error names the dataset's row, and
    the converted folder goes with the failed run."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.chdir(tmp_path)
    ds = datasets.Dataset.from_dict({"speech": [str(wavs / "ok0.wav"), str(wavs / "silent.wav")],
                                     "sentence": [OK[0], LONG_TEXT]})
    ds.save_to_disk(str(tmp_path / "ds"))
    capsys.readouterr()  # its progress bar
    before = snapshot(tmp_path)
    rc = main(["eval", "--wer", "--model", str(whisper_tiny), "--data", "ds", "--out", "ev", "--quiet",
               "--text-column", "sentence", "--audio-column", "speech"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("error: dataset ds: row 1: field 'speech': the audio holds 0.0 s of speech"), err
    assert snapshot(tmp_path) == before


def test_the_rule_by_hand():
    from lpo_speech.asr.audio_check import needed_speech_s, problem, text_units

    def unasked():
        raise AssertionError("the VAD was run where the answer did not depend on it")

    assert text_units("Turn the kitchen-lights off!") == (23, 0)
    assert text_units("我们用 iPhone 打电话。") == (6, 6)
    assert needed_speech_s("turn the kitchen lights off") == pytest.approx(23 / 30)
    assert needed_speech_s("我们打电话") == pytest.approx(0.5)
    sec = 16_000
    assert problem(LONG_TEXT, 31 * sec, unasked, 30 * sec).startswith("is 31.0 s long, longer than the 30 s")
    assert problem(LONG_TEXT, 31 * sec, lambda: 10.0, None) is None  # no window: any length
    assert problem("yes", 10 * sec, unasked, 30 * sec) is None  # a word: never refused
    assert problem(LONG_TEXT, 2 * sec, unasked, 30 * sec).startswith("is 2.0 s long, but")  # 2 s < 3.33 - 0.5
    assert problem(LONG_TEXT, 5 * sec, lambda: 2.9, 30 * sec) is None  # within the tolerance
    assert problem(LONG_TEXT, 5 * sec, lambda: 2.7, 30 * sec).startswith("holds 2.7 s of speech (Silero VAD) in 5.0 s")
    # CJK at 10 characters a second: 30 characters take 3 s
    assert problem("我" * 30, 10 * sec, lambda: 2.4, 30 * sec) is not None
    assert problem("我" * 30, 10 * sec, lambda: 2.6, 30 * sec) is None


def test_speech_is_measured_once_per_audio_and_kept_in_the_feature_store(tmp_path, whisper_tiny, wavs, monkeypatch):
    """build-pairs measures speech while the store decodes the audio; the index line keeps it, so a
    rerun (another store on the same folder) neither decodes nor runs the VAD; an entry stored without
    it (by training) is measured once when asked; audio longer than the window is not measured."""
    from transformers import AutoFeatureExtractor

    import lpo_speech.asr.audio_check as check
    from lpo_speech.asr.features import FeatureStore

    extractor = AutoFeatureExtractor.from_pretrained(str(whisper_tiny))
    clips = {n: shutil.copy(wavs / n, tmp_path / n) for n in ("ok0.wav", "ok1.wav", "long.wav")}
    store = FeatureStore(tmp_path / "features", extractor)
    assert store.window == 30 * 16_000
    plain = store.ensure(clips["ok1.wav"])  # as training stores it
    assert plain.speech_s is None
    store.fill([(clips["ok0.wav"], "a"), (clips["ok1.wav"], "b"), (clips["long.wav"], "c")],
               speech=check.speech_seconds)
    ok0, ok1, long = (store.lookup(clips[n]) for n in ("ok0.wav", "ok1.wav", "long.wav"))
    assert store.computed == 4  # ok1 again, for its speech
    assert 0.8 < ok0.speech_s <= ok0.samples / 16_000 and 0.8 < ok1.speech_s <= ok1.samples / 16_000
    assert long.speech_s is None and long.samples == 35 * 16_000

    def refuse(*_a, **_k):
        raise AssertionError("decoded or measured again")

    monkeypatch.setattr("lpo_speech.asr.features.decode_file", refuse)
    again = FeatureStore(tmp_path / "features", extractor)
    again.fill([(clips[n], n) for n in clips], speech=refuse)
    assert again.computed == 0 and again.lookup(clips["ok1.wav"]).speech_s == ok1.speech_s
