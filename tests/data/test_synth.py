"""Real piper and espeak-ng synthesis, perturbations, and an interrupted + resumed make_asr_data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lpo_speech.audio import load_audio
from lpo_speech.cli import main as cli_main
from lpo_speech.data import synth
from lpo_speech.data.synth import SAMPLE_RATE, make_asr_data
from lpo_speech.errors import UserError

TEXT = "The teacher bought a red umbrella at the market yesterday."


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a**2)))


@pytest.mark.parametrize("make", [
    lambda: synth.synth_piper(TEXT),
    lambda: synth.synth_piper(TEXT, length_scale=1.2, noise_scale=0.8, noise_w_scale=0.9),
    lambda: synth.synth_espeak(TEXT),
    lambda: synth.synth_espeak(TEXT, voice="en-gb", variant="f3", pitch=70, speed=150),
], ids=["piper", "piper-slow", "espeak", "espeak-f3"])
def test_real_synthesis_is_speech_length_and_not_silent(make):
    audio = make()
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 2.0 < len(audio) / SAMPLE_RATE < 8.0
    assert _rms(audio) > 0.02


def test_perturbations():
    rng = np.random.default_rng(0)
    speech = synth.synth_espeak("Please do not open the window.")
    noisy = synth.add_noise(speech, 5.0, rng)
    snr = 10 * np.log10(np.mean(speech**2) / np.mean((noisy - speech) ** 2))
    assert snr == pytest.approx(5.0, abs=0.01)
    assert len(synth.change_speed(speech, 1.25)) == pytest.approx(len(speech) / 1.25, abs=2)
    wet = synth.add_reverb(speech, 0.5, rng)
    assert len(wet) == len(speech) + int(0.5 * SAMPLE_RATE) // 2
    assert np.max(np.abs(wet)) == pytest.approx(np.max(np.abs(speech)), rel=1e-5)


def test_plans_are_reproducible_and_checked():
    a = synth.plan_split(["one two three four five"] * 20, "test", 3, synth.DEFAULT_STYLES)
    assert a == synth.plan_split(["one two three four five"] * 20, "test", 3, synth.DEFAULT_STYLES)
    assert {p["source"] for p in a} <= set(synth.STYLES)
    with pytest.raises(UserError, match="unknown synthesis style 'opera'"):
        synth.plan_split(["x"], "train", 0, ["opera"])


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_make_asr_data_interrupted_and_resumed(tmp_path):
    out = tmp_path / "asr"
    rc = cli_main(["make-asr-data", "--out", str(out), "--n-train", "6", "--n-test", "3", "--workers", "2"])
    assert rc == 0
    first = {name: _lines(out / f"{name}.jsonl") for name in ("train", "test")}
    assert [r["id"] for r in first["train"]] == [f"train-{i:05d}" for i in range(6)]
    assert not {r["text"] for r in first["train"]} & {r["text"] for r in first["test"]}
    for rec in first["train"] + first["test"]:
        assert set(rec) == {"id", "audio", "text", "source"} and rec["audio"] == f"wavs/{rec['id']}.wav"
        assert _rms(load_audio(out / rec["audio"], sample_rate=SAMPLE_RATE)) > 0.01

    # Simulate a crash while writing the 4th line of train: the final file was never made.
    train = out / "train.jsonl"
    text = train.read_text()
    cut = sum(len(line) + 1 for line in text.splitlines()[:3]) + 20
    (out / "train.jsonl.partial").write_text(text[:cut])
    train.unlink()
    os.remove(out / first["train"][1]["audio"])  # a listed wav that has since vanished is redone
    kept = {r["id"]: os.stat(out / r["audio"]).st_mtime_ns for r in (first["train"][0], first["train"][2])}

    stats = make_asr_data(out, 6, 3, seed=0, styles=synth.DEFAULT_STYLES, workers=1, progress=False)
    assert stats["train"] == 4 and stats["test"] == 0  # items 1, 3 (torn line), 4, 5
    resumed = _lines(train)
    assert [r["id"] for r in resumed] == [f"train-{i:05d}" for i in range(6)]  # each id once, in order
    assert [r["text"] for r in resumed] == [r["text"] for r in first["train"]]
    assert all((out / r["audio"]).exists() for r in resumed)
    assert not (out / "train.jsonl.partial").exists()
    assert {i: os.stat(out / f"wavs/{i}.wav").st_mtime_ns for i in kept} == kept  # not redone

    with pytest.raises(UserError, match="other settings"):
        make_asr_data(out, 6, 3, seed=0, styles=["espeak"], workers=1, progress=False)
