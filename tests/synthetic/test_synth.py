"""Real piper and espeak-ng synthesis, perturbations, and an interrupted + resumed make_asr_data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lpo_speech.audio import load_audio
from lpo_speech.cli import main as cli_main
from lpo_speech.synthetic import synth
from lpo_speech.synthetic.synth import SAMPLE_RATE, make_asr_data
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


# ---- out-of-domain held-out sets and natural text in training ------------------------------------

def test_ood_conditions_are_disjoint_from_training():
    """Every out-of-domain plan differs from every training item in voice, speed, noise or room."""
    from lpo_speech.tts.styles import STYLES as TTS_STYLES

    assert not {v.lower() for v in synth.OOD_ESPEAK_VOICES} & {v.lower() for v in synth.ESPEAK_VOICES}
    assert not {v.lower() for v in synth.OOD_ESPEAK_VARIANTS} & {v.lower() for v in synth.ESPEAK_VARIANTS}
    assert not set(synth.OOD_CONDITIONS) & set(synth.STYLES)
    tts_scales = {s.length_scale for s in TTS_STYLES.values()}
    plans = synth.plan_ood_split([TEXT] * 350, "ood_dev", 0)
    assert {p["source"] for p in plans} == set(synth.OOD_CONDITIONS)
    for p in plans:
        cond = p["source"]
        if cond == "espeak-accent":
            assert p["voice"] in synth.OOD_ESPEAK_VOICES
        elif cond == "espeak-variant":
            assert p["variant"] in synth.OOD_ESPEAK_VARIANTS
        elif cond in ("piper-fast", "piper-slow"):
            assert not 0.85 <= p["length_scale"] <= 1.2 and p["length_scale"] not in tts_scales
            if cond == "piper-slow":  # timbre/rhythm noise beyond training's 0.4-0.9 / 0.5-1.0
                assert p["noise_scale"] > 0.9 and p["noise_w_scale"] > 1.0
        elif cond == "piper+brown":
            assert p["snr_db"] < 0.0  # training: white/pink noise at 0-12 dB
        elif cond == "piper+babble":
            from lpo_speech.synthetic.natural import pool

            assert 3 <= len(p["talkers"]) <= 6 and {t["text"] for t in p["talkers"]} <= set(pool("train"))
        elif cond == "piper+hall":
            assert p["rt60"] > 1.2  # training rooms: rt60 0.4-1.2 s
    assert plans == synth.plan_ood_split([TEXT] * 350, "ood_dev", 0)
    counts = [sum(p["source"] == c for p in plans[:20]) for c in synth.OOD_CONDITIONS]
    assert max(counts) - min(counts) <= 1  # balanced in any prefix
    with pytest.raises(UserError, match="unknown out-of-domain condition 'opera'"):
        synth.plan_ood_split([TEXT], "ood_dev", 0, ["opera"])


def test_brown_noise_and_babble_mix_at_their_snr():
    rng = np.random.default_rng(0)
    speech = synth.synth_espeak("Please do not open the window.")
    for snr in (-20.0, 5.0):
        noisy = synth.add_noise(speech, snr, rng, brown=True)
        noise = noisy - speech
        assert 10 * np.log10(np.mean(speech**2) / np.mean(noise**2)) == pytest.approx(snr, abs=0.01)
        spec = np.abs(np.fft.rfft(noise)) ** 2
        cut = int(len(spec) * 200 / (SAMPLE_RATE / 2))  # brown: most power below 200 Hz
        assert spec[:cut].sum() > 0.9 * spec.sum()
    # white and pink draw and shape exactly as before the brown option (existing data reproduces)
    base = np.random.default_rng(3).standard_normal(len(speech))
    spec = np.fft.rfft(base)
    spec[1:] /= np.sqrt(np.arange(1, len(spec)))
    pink = np.fft.irfft(spec, n=len(speech))
    pink *= np.sqrt(np.mean(speech**2) / (np.mean(pink**2) * 10 ** 0.5))
    assert np.array_equal(synth.add_noise(speech, 5.0, np.random.default_rng(3), pink=True),
                          (speech + pink).astype(np.float32))
    talkers = [synth.synth_espeak("The rain starts soon."), synth.synth_espeak("We go home.", variant="f2")]
    mixed = synth.add_babble(speech, talkers, 3.0, rng)
    assert len(mixed) == len(speech)
    assert 10 * np.log10(np.mean(speech**2) / np.mean((mixed - speech) ** 2)) == pytest.approx(3.0, abs=0.01)


def test_make_ood_asr_data_every_condition_resumed(tmp_path):
    """One utterance per condition through the CLI, a lost wav redone alone, settings checked."""
    from lpo_speech.synthetic.natural import pool

    out = tmp_path / "asr"
    n = len(synth.OOD_CONDITIONS)
    assert cli_main(["make-asr-data", "--out", str(out), "--ood", "--n-ood-dev", str(n), "--n-ood-test", "1",
                     "--workers", "1"]) == 0
    assert not (out / "train.jsonl").exists()  # --ood makes only the held-out sets
    dev, test = _lines(out / "ood_dev.jsonl"), _lines(out / "ood_test.jsonl")
    assert [r["source"] for r in dev] == list(synth.OOD_CONDITIONS) and len(test) == 1
    assert {r["text"] for r in dev} <= set(pool("dev")) and {r["text"] for r in test} <= set(pool("test"))
    for rec in dev + test:
        plan = synth.plan_ood_item(rec["id"], rec["text"], rec["source"], 0)
        assert {k: rec[k] for k in plan if k not in ("talkers",)} == {k: v for k, v in plan.items() if k != "talkers"}
        audio = load_audio(out / rec["audio"], sample_rate=SAMPLE_RATE)  # 16 kHz mono, or an error
        assert audio.ndim == 1 and _rms(audio) > 0.01 and len(audio) / SAMPLE_RATE > 0.5
    assert next(r for r in dev if r["source"] == "piper+babble")["talkers"] >= 3

    (out / "ood_dev.jsonl").rename(out / "ood_dev.jsonl.partial")  # as if killed before the rename
    os.remove(out / dev[3]["audio"])
    kept = os.stat(out / dev[0]["audio"]).st_mtime_ns
    stats = synth.make_ood_asr_data(out, n, 1, workers=1, progress=False)
    assert stats["ood_dev"] == 1 and stats["ood_test"] == 0
    assert _lines(out / "ood_dev.jsonl") == dev and os.stat(out / dev[0]["audio"]).st_mtime_ns == kept
    with pytest.raises(UserError, match="other settings"):
        synth.make_ood_asr_data(out, n, 2, workers=1, progress=False)
    with pytest.raises(UserError, match="natural test pool holds"):
        synth.make_ood_asr_data(tmp_path / "x", 1, 10_000, workers=1, progress=False)
    assert cli_main(["make-asr-data", "--out", str(tmp_path / "y"), "--n-ood-dev", "3"]) == 2


def test_make_asr_data_natural_share(tmp_path):
    from lpo_speech.synthetic.natural import pool
    from lpo_speech.synthetic.sentences import make_splits

    out = tmp_path / "asr"
    assert cli_main(["make-asr-data", "--out", str(out), "--n-train", "3", "--n-test", "1", "--natural-share", "1",
                     "--workers", "1"]) == 0
    train, test = _lines(out / "train.jsonl"), _lines(out / "test.jsonl")
    assert {r["text"] for r in train} <= set(pool("train")) and len({r["text"] for r in train}) == 3
    assert [r["text"] for r in test] == make_splits(3, 1, 0)[1]  # the held-out split stays the grammar's
    assert json.loads((out / "make_asr_data.json").read_text())["natural_share"] == 1.0
    with pytest.raises(UserError, match="other settings"):
        make_asr_data(out, 3, 1, seed=0, workers=1, progress=False)
    with pytest.raises(UserError, match="outside"):
        make_asr_data(tmp_path / "x", 3, 1, natural_share=-0.1, workers=1, progress=False)
    make_asr_data(tmp_path / "z", 0, 0, workers=1, progress=False)  # default: settings as before the option
    assert set(json.loads((tmp_path / "z" / "make_asr_data.json").read_text())) == {"n_train", "n_test", "seed", "styles"}
