"""load_audio / save_wav / duration on real files, including every bad-input case a user hits."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from lpo_speech.audio import duration, load_audio, save_wav
from lpo_speech.errors import UserError


def _tone(sr: int, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_save_load_roundtrip_pcm16(tmp_path):
    path = tmp_path / "sub" / "a.wav"
    save_wav(path, _tone(16000), 16000)
    assert sf.info(str(path)).subtype == "PCM_16"
    audio = load_audio(path, sample_rate=16000)
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    assert np.max(np.abs(audio - _tone(16000))) < 1e-3  # PCM16 quantization only
    assert duration(path) == pytest.approx(0.5)
    assert os.listdir(path.parent) == ["a.wav"]  # no temp file left behind


def test_save_wav_clips_instead_of_wrapping(tmp_path):
    save_wav(tmp_path / "loud.wav", np.array([2.0, -2.0, 0.5], dtype=np.float32), 16000)
    audio = load_audio(tmp_path / "loud.wav", sample_rate=16000)
    assert audio[0] > 0.99 and audio[1] < -0.99 and audio[2] == pytest.approx(0.5, abs=1e-4)


def test_other_rates_are_resampled_and_announced_once(tmp_path, capsys):
    import lpo_speech.audio as audio_mod

    audio_mod._ANNOUNCED.clear()  # a fresh process's state: nothing said yet
    for name in ("a8k.wav", "b8k.wav"):
        sf.write(tmp_path / name, _tone(8000), 8000, subtype="PCM_16")
    sf.write(tmp_path / "c44.wav", _tone(44100), 44100, subtype="PCM_16")
    a = load_audio(tmp_path / "a8k.wav", sample_rate=16000)
    load_audio(tmp_path / "b8k.wav", sample_rate=16000)
    c = load_audio(tmp_path / "c44.wav", sample_rate=16000)
    assert a.dtype == np.float32 and abs(len(a) - 8000) <= 2 and abs(len(c) - 8000) <= 2
    # the 440 Hz tone survives: its correlation with a 16 kHz tone is near 1
    assert np.corrcoef(a[100:7900], _tone(16000)[100:7900])[0, 1] > 0.99
    err = capsys.readouterr().err.splitlines()
    assert err == [f"audio: converting 8000 Hz mono to 16000 Hz mono on load (soxr; first: {tmp_path / 'a8k.wav'})",
                   f"audio: converting 44100 Hz mono to 16000 Hz mono on load (soxr; first: {tmp_path / 'c44.wav'})"]


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.wav.*not found"):
        load_audio(tmp_path / "nope.wav", sample_rate=16000)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(UserError, match=r"noise\.wav: cannot read audio") as e:
        load_audio(bad, sample_rate=16000)
    assert "\n" not in str(e.value)


def test_stereo_is_downmixed(tmp_path):
    left, right = _tone(8000), -0.5 * _tone(8000)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    at_8k = load_audio(tmp_path / "st.wav", sample_rate=8000)
    np.testing.assert_allclose(at_8k, (left + right) / 2, atol=1e-6)  # the mean of the channels
    assert abs(len(load_audio(tmp_path / "st.wav", sample_rate=16000)) - 8000) <= 2  # downmixed, then resampled


def test_empty(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(UserError, match=r"empty\.wav: audio is empty"):
        load_audio(tmp_path / "empty.wav", sample_rate=16000)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    audio = _tone(16000)
    audio[4000] = bad
    sf.write(tmp_path / "bad.wav", audio, 16000, subtype="FLOAT")
    with pytest.raises(UserError, match=r"bad\.wav: 1 non-finite samples \(NaN or infinity; first at sample 4000, 0\.250 s\)"):
        load_audio(tmp_path / "bad.wav", sample_rate=16000)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_24", "DOUBLE", "ULAW"])
def test_other_sample_formats_load(tmp_path, subtype):
    sf.write(tmp_path / "a.wav", _tone(16000), 16000, subtype=subtype)
    audio = load_audio(tmp_path / "a.wav", sample_rate=16000)
    assert audio.dtype == np.float32 and np.max(np.abs(audio - _tone(16000))) < 0.05


def test_where_prefixes_message(tmp_path):
    with pytest.raises(UserError, match=r"^data/train\.jsonl:3: .*x\.wav: audio file not found$"):
        load_audio(tmp_path / "x.wav", sample_rate=16000, where="data/train.jsonl:3")


def test_each_file_is_decoded_once_per_process(tmp_path, monkeypatch):
    """A stage checks its inputs, then reads them again: the second read comes from the cache (a copy),
    a rewritten file is decoded anew, and a zero budget turns the cache off."""
    from lpo_speech import audio as audio_mod

    calls = []
    real = audio_mod._decoded
    monkeypatch.setattr(audio_mod, "_decoded", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    path = tmp_path / "a.wav"
    sf.write(path, _tone(8000), 8000, subtype="PCM_16")
    first = load_audio(path, sample_rate=16000)
    first[:] = 0  # the caller's copy: the cached samples stay as decoded
    second = load_audio(path, sample_rate=16000)
    assert len(calls) == 1 and np.abs(second).max() > 0.1
    sf.write(path, 0.5 * _tone(8000), 8000, subtype="PCM_16")
    os.utime(path, ns=(1, 1))  # another mtime, as a rewrite gets
    assert np.abs(load_audio(path, sample_rate=16000)).max() < 0.6 and len(calls) == 2
    monkeypatch.setenv("LPO_SPEECH_AUDIO_CACHE_MB", "0")
    load_audio(tmp_path / "a.wav", sample_rate=8000)
    load_audio(tmp_path / "a.wav", sample_rate=8000)
    assert len(calls) == 4
