"""PCM WAV files through the standard library's `wave` module: what lpo_speech.audio reads and writes
where soundfile (libsndfile) is not installed, such as the GPU image of benchmarks/gpu_check.py.

Samples come out as soundfile gives them, bit for bit (tests/test_wav.py compares the two): integer
PCM is scaled as libsndfile scales it (8-bit unsigned: (x - 128) / 128; 16/24/32-bit signed:
x / 2**(bits - 1), in float32), and writing 16-bit PCM stores floor(32768 * x), clipped to
[-32768, 32767], as the libsndfile in soundfile's wheels (1.2) does; so a file read and written again is
the same file. Any other file (float WAV, FLAC, MP3, ...) is
`NotPcmWav`: reading it needs soundfile.
"""

from __future__ import annotations

import wave
from typing import BinaryIO

import numpy as np


class NotPcmWav(ValueError):
    """The file is not an integer-PCM WAV file the standard library can read."""


def _open(source: str | BinaryIO) -> wave.Wave_read:
    try:
        return wave.open(source, "rb")
    except (wave.Error, EOFError) as e:
        raise NotPcmWav(str(e) or type(e).__name__) from None


def info(source: str | BinaryIO) -> tuple[int, int, int]:
    """(frames, sample rate, channels) from the header."""
    with _open(source) as w:
        return w.getnframes(), w.getframerate(), w.getnchannels()


def read(source: str | BinaryIO) -> tuple[np.ndarray, int]:
    """float32 samples [frames, channels] in [-1, 1) and the sample rate."""
    with _open(source) as w:
        width, channels, rate, frames = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
        data = w.readframes(frames)
    n = len(data) // (width * channels)  # a truncated file holds fewer frames than its header says
    raw = np.frombuffer(data[:n * width * channels], dtype=np.uint8)
    if width == 1:
        x = (raw.astype(np.int16) - 128).astype(np.float32) * np.float32(1 / 128)
    elif width in (2, 4):
        x = raw.view(f"<i{width}").astype(np.float32) * np.float32(2.0 ** (1 - 8 * width))
    elif width == 3:  # little-endian 24-bit: the three bytes placed high in an int32, then shifted back
        b = raw.reshape(-1, 3).astype(np.int32)
        ints = ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)) >> 8
        x = ints.astype(np.float32) * np.float32(2.0 ** -23)
    else:
        raise NotPcmWav(f"{8 * width}-bit samples")
    return x.reshape(n, channels), rate


def write(f: BinaryIO, audio: np.ndarray, sample_rate: int) -> None:
    """Mono float samples (already in [-1, 1]) as 16-bit PCM."""
    scaled = np.floor(np.asarray(audio, dtype=np.float64) * 32768.0)
    pcm = np.clip(scaled, -32768, 32767).astype("<i2")
    with wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
