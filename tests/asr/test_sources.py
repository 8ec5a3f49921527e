"""ASR inputs that are not JSONL manifests: a Hugging Face `datasets` folder and a lhotse CutSet go
through build-pairs and eval (converted once into the stage's input/ folder, at 16 kHz mono), a hub
dataset that cannot be reached is one line, undecodable rows are one line naming the row, and a
converted folder is reused, refused or redone as the rerun's input says."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import REPO, espeak_wav

datasets = pytest.importorskip("datasets")
lhotse = pytest.importorskip("lhotse")

RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"
TEXTS = ["turn the kitchen lights off", "the farmer sings twice a week", "open the window please"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """Three espeak utterances at other rates and channel counts (8 kHz stereo, 44.1 kHz, 16 kHz)."""
    root = tmp_path_factory.mktemp("sources")
    (root / "wavs").mkdir()
    by_hand = []
    for i, t in enumerate(TEXTS):
        audio, _ = sf.read(str(espeak_wav(root / "wavs" / f"e{i}.wav", t)), dtype="float32")
        sr = (8000, 44100, 16000)[i]
        other = soxr.resample(audio, 16000, sr).astype(np.float32)
        data = np.stack([other, 0.5 * other], axis=1) if i == 0 else other
        sf.write(root / "wavs" / f"s{i}.flac", data, sr, subtype="PCM_24")
        mono = (other + 0.5 * other) / 2 if i == 0 else other
        by_hand.append(soxr.resample(mono, sr, 16000, quality="HQ") if sr != 16000 else mono)
    return root, by_hand


def save_dataset(root: Path, speech_root: Path, name: str = "ds") -> Path:
    ds = datasets.Dataset.from_dict({"audio": [str(speech_root / "wavs" / f"s{i}.flac") for i in range(3)],
                                     "sentence": TEXTS, "uid": [f"utt-{i}" for i in range(3)]})
    ds = ds.cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"train": ds}).save_to_disk(str(root / name))  # the audio's bytes are embedded
    return root / name


def save_cuts(root: Path, speech_root: Path) -> Path:
    """A CutSet of 0.2 s-trimmed supervisions, written as lhotse writes it (jsonl.gz)."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs = [Recording.from_file(str(speech_root / "wavs" / f"s{i}.flac"), recording_id=f"rec-{i}") for i in range(3)]
    sups = [SupervisionSegment(id=f"sup-{i}", recording_id=f"rec-{i}", start=0.0, duration=r.duration,
                               channel=r.channel_ids if len(r.channel_ids) > 1 else 0, text=TEXTS[i])
            for i, r in enumerate(recs)]
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs),
                                 supervisions=SupervisionSet.from_segments(sups))
    path = root / "cuts.jsonl.gz"
    cuts.to_file(str(path))
    return path


def test_source_kinds(tmp_path, speech):
    from lpo_speech.asr.sources import source_kind
    from lpo_speech.errors import UserError

    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "x"}) + "\n")
    assert source_kind(str(tmp_path / "m.jsonl")) == "jsonl"
    assert source_kind(str(save_dataset(tmp_path, speech[0]))) == "datasets-disk"
    assert source_kind(str(save_cuts(tmp_path, speech[0]))) == "lhotse"
    (tmp_path / "plain").mkdir()
    assert source_kind(str(tmp_path / "plain")) == "datasets-folder"
    assert source_kind("hf:openslr/librispeech_asr") == "datasets-hub"
    assert source_kind("openslr/librispeech_asr") == "datasets-hub"
    with pytest.raises(UserError, match="no such file or folder"):
        source_kind(str(tmp_path / "missing.jsonl"))


def test_dataset_converted_once_reused_and_guarded(tmp_path, speech):
    from lpo_speech.asr.sources import InputColumns, prepare_manifest
    from lpo_speech.errors import UserError

    ds = save_dataset(tmp_path, speech[0])
    cols = InputColumns(text="sentence", id="uid")
    manifest = prepare_manifest(str(ds), tmp_path / "input", cols, quiet=True)
    rows = lines(manifest)
    assert [r["id"] for r in rows] == ["utt-0", "utt-1", "utt-2"] and [r["text"] for r in rows] == TEXTS
    for r, expected in zip(rows, speech[1]):
        audio, sr = sf.read(str(manifest.parent / r["audio"]), dtype="float32")
        assert sr == 16000 and audio.ndim == 1  # mono 16 kHz, the same samples as a conversion by hand
        assert np.abs(audio - np.clip(expected, -1, 1)).max() < 2e-4
    stamp = manifest.stat().st_mtime_ns
    assert prepare_manifest(str(ds), tmp_path / "input", cols, quiet=True) == manifest
    assert manifest.stat().st_mtime_ns == stamp  # reused, not converted again
    with pytest.raises(UserError, match="converted from another input .*columns"):
        prepare_manifest(str(ds), tmp_path / "input", InputColumns(text="sentence"), quiet=True)
    assert lines(manifest) == rows  # a refused rerun leaves the folder as it was
    again = prepare_manifest(str(ds), tmp_path / "input", InputColumns(text="sentence"), overwrite=True, quiet=True)
    assert [r["id"] for r in lines(again)] == ["train-0000000", "train-0000001", "train-0000002"]
    with pytest.raises(UserError, match=r"no text column 'transcript' \(columns: audio, sentence, uid\)"):
        prepare_manifest(str(ds), tmp_path / "other", InputColumns(text="transcript"), quiet=True)
    with pytest.raises(UserError, match="no split 'test' .*splits: train"):
        prepare_manifest(str(ds), tmp_path / "other", InputColumns(text="sentence", split="test"), quiet=True)
    assert not (tmp_path / "other").exists()


def test_a_split_that_is_not_there_is_refused(tmp_path, monkeypatch, capsys):
    """--split / build_pairs.split is never ignored: a dataset saved as one Dataset (no DatasetDict), a
    folder of data files with one split, and a lhotse CutSet refuse a split they do not hold in one line
    (naming what they hold) instead of reading every row; a Dataset's own named split is accepted."""
    from lpo_speech.asr.sources import InputColumns, _load_dataset, prepare_manifest
    from lpo_speech.cli import main
    from lpo_speech.errors import UserError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = {"audio": ["a.wav", "b.wav"], "text": ["one", "two"]}
    datasets.Dataset.from_dict(rows).save_to_disk("plain")
    datasets.Dataset.from_dict(rows, split="validation").save_to_disk("named")
    (tmp_path / "files").mkdir()
    datasets.Dataset.from_dict(rows).to_parquet("files/data.parquet")
    (tmp_path / "cuts.jsonl").write_text(json.dumps({"id": "c0", "type": "MonoCut", "start": 0.0}) + "\n")

    def refused(source: str, split: str) -> str:
        with pytest.raises(UserError) as e:
            prepare_manifest(source, tmp_path / "input", InputColumns(split=split), quiet=True)
        assert not (tmp_path / "input").exists()
        return str(e.value)

    assert refused("plain", "validation") == ("dataset plain: no split 'validation' (one set of rows, no named "
                                              "splits); leave split / --split out to read all of it")
    assert refused("named", "test") == ("dataset named: no split 'test' (its rows are split 'validation'); "
                                        "leave split / --split out to read all of it")
    ds, split = _load_dataset("named", "datasets-disk", "validation")
    assert (len(ds), split) == (2, "validation")
    said = refused("files", "validation")
    assert said.startswith("dataset files: cannot load") and "validation" in said and "train" in said, said
    assert refused("cuts.jsonl", "validation") == ("cuts.jsonl: a lhotse CutSet has no splits (one manifest per "
                                                   "split), so there is no split 'validation'; leave split / --split out")

    model = tmp_path / "m"  # an ASR config passes the model check; the data fails before any weights load
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    capsys.readouterr()
    assert main(["eval", "--wer", "--model", "m", "--data", "plain", "--split", "validation", "--out", "ev",
                 "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert err == "error: dataset plain: no split 'validation' (one set of rows, no named splits); leave split " \
                  "/ --split out to read all of it\n" and not out, (out, err)
    assert not (tmp_path / "ev").exists()


def test_lhotse_cuts_are_cut_audio(tmp_path, speech):
    from lpo_speech.asr.sources import prepare_manifest

    manifest = prepare_manifest(str(save_cuts(tmp_path, speech[0])), tmp_path / "input", quiet=True)
    rows = lines(manifest)
    assert [r["text"] for r in rows] == TEXTS
    for r, expected in zip(rows, speech[1]):
        audio, sr = sf.read(str(manifest.parent / r["audio"]), dtype="float32")
        assert sr == 16000 and audio.ndim == 1 and abs(len(audio) - len(expected)) <= 2
        n = min(len(audio), len(expected))
        assert np.abs(audio[:n] - np.clip(expected[:n], -1, 1)).max() < 2e-3


def test_undecodable_row_is_one_line_and_leaves_nothing(tmp_path, lpo, speech):
    ds = datasets.Dataset.from_dict({"audio": [{"bytes": (speech[0] / "wavs" / "s1.flac").read_bytes(), "path": "a.flac"},
                                               {"bytes": b"not audio at all", "path": "b.flac"}],
                                     "text": TEXTS[:2]}).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(tmp_path / "bad"))
    model = tmp_path / "m"  # an ASR config passes the model check; the data fails before any weights load
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    res = lpo("eval", "--wer", "--model", str(model), "--data", "bad", "--out", "ev", "--quiet", cwd=tmp_path,
              check=False)
    err = [l for l in res.stderr.strip().splitlines() if not l.startswith("audio: converting")]
    assert res.returncode == 2 and len(err) == 1 and "Traceback" not in res.stderr, res.stderr
    assert err[0] == "error: dataset bad: row 1: audio: cannot read audio (Format not recognised.)", err
    assert not (tmp_path / "ev").exists()


def test_unreachable_hub_dataset_is_one_line(tmp_path, lpo):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    res = lpo("eval", "--wer", "--model", str(model), "--data", "hf:nobody/no-such-dataset", "--out", "ev",
              cwd=tmp_path, check=False, env={**OFFLINE, "HF_HOME": str(tmp_path / "hf")})
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1 and "Traceback" not in res.stderr, res.stderr
    assert err[0].startswith("error: dataset hf:nobody/no-such-dataset: cannot load"), err
    assert not (tmp_path / "ev").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["datasets", "lhotse"])
def test_build_pairs_and_eval_from(kind, tmp_path, lpo, whisper_tiny, speech):
    """Each input goes through build-pairs and eval and gives the transcripts of the same audio in a
    JSONL manifest converted by hand."""
    root = tmp_path
    if kind == "datasets":
        source = save_dataset(root, speech[0])
        cols = ["build_pairs.text_column=sentence", "build_pairs.id_column=uid", "build_pairs.split=train"]
        eval_cols = ["--text-column", "sentence", "--id-column", "uid"]
    else:
        source, cols, eval_cols = save_cuts(root, speech[0]), [], []
    ov = [f"model.path={whisper_tiny}", f"build_pairs.manifest={source}", f"build_pairs.work_dir={root / 'pairs'}",
          f"data.pairs={root / 'pairs' / 'pairs.jsonl'}", f"train.out_dir={root / 'lpo'}", *cols,
          "build_pairs.perturbations=2", "runtime.device=cpu"]
    res = lpo("build-pairs", str(RECIPE), *ov, "--quiet", cwd=root, env=OFFLINE)
    said = [l for l in res.stderr.splitlines() if l.startswith("audio: converting")]
    assert len(said) == 2  # 8 kHz stereo and 44.1 kHz, once each
    pairs = lines(root / "pairs" / "pairs.jsonl")
    assert {p["chosen_text"] for p in pairs} == set(TEXTS)
    assert all((root / "pairs" / p["audio"]).is_file() for p in pairs)
    assert json.loads((root / "pairs" / "input" / "source.json").read_text())["kind"] == (
        "datasets-disk" if kind == "datasets" else "lhotse")
    res = lpo("build-pairs", str(RECIPE), *ov, "--quiet", cwd=root, env=OFFLINE)  # a rerun reuses everything
    assert not [l for l in res.stderr.splitlines() if l.startswith("audio: converting")]

    lpo("eval", "--wer", "--model", str(whisper_tiny), "--data", str(source), *eval_cols, "--out", "ev", "--quiet",
        cwd=root, env=OFFLINE)
    (root / "hand").mkdir()
    rows = []
    for i, (t, audio) in enumerate(zip(TEXTS, speech[1])):
        sf.write(root / "hand" / f"{i}.wav", np.clip(audio, -1, 1), 16000, subtype="PCM_16")
        rows.append({"id": f"h{i}", "audio": f"hand/{i}.wav", "text": t})
    (root / "hand.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lpo("eval", "--wer", "--model", str(whisper_tiny), "--data", "hand.jsonl", "--out", "ev-hand", "--quiet", cwd=root)
    got = lines(root / "ev" / whisper_tiny.name / "utterances.jsonl")
    hand = lines(root / "ev-hand" / whisper_tiny.name / "utterances.jsonl")
    assert [r["ref"] for r in got] == TEXTS
    if kind == "datasets":
        assert [r["hyp"] for r in got] == [r["hyp"] for r in hand]
    else:  # lhotse resamples on its own way to the file's rate: the same words, not always the same samples
        assert json.loads((root / "ev" / "metrics.json").read_text())["wer"] <= \
            json.loads((root / "ev-hand" / "metrics.json").read_text())["wer"] + 0.1
    assert os.path.isfile(root / "ev" / "input" / "manifest.jsonl")
