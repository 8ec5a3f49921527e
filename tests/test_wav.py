"""lpo_speech.wav (PCM WAV through the standard library) gives what soundfile gives, and lpo_speech.audio
uses it where soundfile is missing (run under benchmarks/gpu_image.py's hook, as on the GPU image)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from lpo_speech import wav

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_image  # noqa: E402


def _noise(shape) -> np.ndarray:
    return np.clip(np.random.default_rng(0).standard_normal(shape) * 0.4, -1, 1).astype(np.float32)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32"])
@pytest.mark.parametrize("channels", [1, 2])
def test_reads_the_samples_soundfile_reads(subtype, channels):
    buf = io.BytesIO()
    sf.write(buf, _noise((3001, channels)), 22050, subtype=subtype, format="WAV")
    want, rate = sf.read(io.BytesIO(buf.getvalue()), dtype="float32", always_2d=True)
    got, got_rate = wav.read(io.BytesIO(buf.getvalue()))
    assert got.dtype == np.float32 and got_rate == rate == 22050
    assert np.array_equal(got, want)
    assert wav.info(io.BytesIO(buf.getvalue())) == (3001, 22050, channels)


def test_writes_the_bytes_soundfile_writes():
    # random samples, the range's ends, values past them, and the rounding cases around one step
    step = 1 / 32768
    x = np.concatenate([_noise(4000), [1.0, -1.0, 0.999999, -0.999999, 0.5 * step, 1.5 * step, -0.5 * step, -2.5 * step]])
    x = np.clip(x, -1, 1).astype(np.float32)
    ours, theirs = io.BytesIO(), io.BytesIO()
    wav.write(ours, x, 16000)
    sf.write(theirs, x, 16000, subtype="PCM_16", format="WAV")
    assert ours.getvalue() == theirs.getvalue()


def test_other_formats_are_not_pcm_wav():
    buf = io.BytesIO()
    sf.write(buf, _noise(800), 8000, subtype="FLOAT", format="WAV")
    with pytest.raises(wav.NotPcmWav):
        wav.read(io.BytesIO(buf.getvalue()))
    with pytest.raises(wav.NotPcmWav):
        wav.info(io.BytesIO(b"fLaC not a wav"))


def test_audio_without_soundfile_reads_and_writes_as_with_it(tmp_path):
    x = _noise(16000)
    sf.write(tmp_path / "in.wav", x, 16000, subtype="PCM_16")
    sf.write(tmp_path / "stereo.wav", _noise((8000, 2)), 16000, subtype="PCM_24")
    sf.write(tmp_path / "in.flac", x, 16000)
    sf.write(tmp_path / "in8k.wav", x, 8000, subtype="PCM_16")
    want = {n: sf.read(tmp_path / n, dtype="float32", always_2d=True)[0].mean(axis=1)
            for n in ("in.wav", "stereo.wav")}
    np.savez(tmp_path / "want.npz", **{n.replace(".", "_"): v for n, v in want.items()})
    sf.write(tmp_path / "theirs.wav", np.clip(want["in.wav"] * 1.5, -1, 1), 16000, subtype="PCM_16")
    hook = gpu_image.write_hook(tmp_path / "hook")
    code = f"""
import sys, numpy as np
from pathlib import Path
from lpo_speech.audio import duration, load_audio, save_wav
from lpo_speech.errors import UserError
assert "soundfile" not in sys.modules
d = Path({str(tmp_path)!r})
want = np.load(d / "want.npz")
for name in ("in.wav", "stereo.wav"):
    assert np.array_equal(load_audio(d / name, sample_rate=16000), want[name.replace(".", "_")]), name
assert duration(d / "in.wav") == 1.0
save_wav(d / "ours.wav", load_audio(d / "in.wav", sample_rate=16000) * 1.5, 16000)
for name, rate in (("in.flac", 16000), ("in8k.wav", 16000)):
    try:
        load_audio(d / name, sample_rate=rate)
    except UserError as e:
        print(e)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "ours.wav").read_bytes() == (tmp_path / "theirs.wav").read_bytes()
    flac, resample = res.stdout.splitlines()
    assert flac.startswith(f"{tmp_path / 'in.flac'}: cannot read audio (") and flac.endswith(
        "not a PCM WAV file, and soundfile, which reads other formats, is not installed: pip install soundfile)")
    assert resample == ("resampling audio from 8000 Hz to 16000 Hz needs the Python package 'soxr' "
                        "(not installed; pip install soxr)")
