"""Audio file I/O with errors a user can act on.

Every model in the project expects one fixed sample rate and mono audio. `load_audio` converts what
it reads: several channels are averaged to one, and another rate is resampled with soxr (its
high-quality setting), in that order, once per load. Each kind of conversion (source rate, channel
count -> target) is announced in one line on stderr the first time a process meets it, so a user
sees that a manifest was converted without a line per file. Only audio that cannot be decoded is an
error, and so are empty files and non-finite samples (a float WAV holding NaN or infinities), which
would make every feature and score NaN. Failures are `UserError`s naming the file.

soundfile and soxr are imported on first use: training on token pairs, sampling and online TTS import
this module but read no audio, and run where neither is installed (the GPU image of
benchmarks/gpu_check.py). Without soundfile, integer-PCM WAV files are read and written with the
standard library (lpo_speech.wav: the same samples soundfile gives); any other format is a UserError
naming soundfile, and so is resampling without soxr (lpo_speech.optional).
"""

from __future__ import annotations

import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lpo_speech import wav
from lpo_speech.errors import UserError
from lpo_speech.optional import require

_ANNOUNCED: set[tuple[int, int, int]] = set()  # (source rate, channels, target rate) said this process


@lru_cache(maxsize=1)
def _soundfile():
    """soundfile, or None where it is not installed (or cannot load libsndfile): then lpo_speech.wav."""
    try:
        import soundfile
    except (ImportError, OSError):
        return None
    return soundfile


_NO_SOUNDFILE = "not a PCM WAV file, and soundfile, which reads other formats, is not installed: pip install soundfile"


def _info(path: Path, where: str):
    """Header of `path` (.frames, .samplerate); `where` (which always contains the path) prefixes any error."""
    if not path.exists():
        raise UserError("audio file not found", where=where)
    if not path.is_file():
        raise UserError("not a regular file", where=where)
    sf = _soundfile()
    if sf is None:
        try:
            frames, rate, _ = wav.info(str(path))
        except wav.NotPcmWav as e:
            raise UserError(f"cannot read audio ({e}; {_NO_SOUNDFILE})", where=where) from None
        return SimpleNamespace(frames=frames, samplerate=rate)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read audio ({reason})", where=where) from None


def _announce(sr: int, channels: int, target: int, origin: object) -> None:
    key = (sr, channels, target)
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    what = f"{sr} Hz {'mono' if channels == 1 else f'{channels} channels'}"
    print(f"audio: converting {what} to {target} Hz mono on load (soxr; first: {origin})", file=sys.stderr)


class _DecodedCache:
    """The last decoded files of this process, up to a byte budget (least recently used out first):
    a stage checks every input before it writes, then reads it again to work on it, and build-pairs
    reads each audio for its candidates and again for its reference log-probs; with the cache each
    file is decoded and resampled once per process. Keyed by the resolved path, its size and mtime,
    and the target rate, so a changed file is read again. Budget: LPO_SPEECH_AUDIO_CACHE_MB (default
    1024; 0 turns it off)."""

    def __init__(self) -> None:
        from collections import OrderedDict

        self.items: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self.bytes = 0

    def budget(self) -> int:
        return int(float(os.environ.get("LPO_SPEECH_AUDIO_CACHE_MB", "1024")) * (1 << 20))

    def get(self, key: tuple) -> np.ndarray | None:
        hit = self.items.get(key)
        if hit is not None:
            self.items.move_to_end(key)
        return hit

    def put(self, key: tuple, audio: np.ndarray) -> None:
        budget = self.budget()
        if audio.nbytes > budget:
            return
        self.items[key] = audio
        self.bytes += audio.nbytes
        while self.bytes > budget:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.nbytes


_DECODED = _DecodedCache()


def load_audio(path: str | os.PathLike, *, sample_rate: int, where: str | None = None) -> np.ndarray:
    """Load an audio file as mono float32 samples in [-1, 1] at `sample_rate` (converted if need be).

    `where` names the origin in messages (e.g. ``data/train.jsonl:12``); the file path is always
    included. Each file is decoded once per process while it stays in the cache (`_DecodedCache`);
    every call returns its own copy.
    """
    p = Path(path)
    loc = f"{where}: {p}" if where else str(p)
    _info(p, loc)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, sample_rate)
    hit = _DECODED.get(key)
    if hit is None:
        hit = _decoded(str(p), loc, sample_rate, origin=p)
        _DECODED.put(key, hit)
    return hit.copy()


def decode_audio(data: bytes, *, sample_rate: int, where: str) -> np.ndarray:
    """`load_audio` for encoded bytes held in memory (a dataset's audio column); `where` names the row."""
    import io

    if not data:
        raise UserError("audio is empty (0 bytes)", where=where)
    return _decoded(io.BytesIO(data), where, sample_rate, origin=where)


def _decoded(source, loc: str, sample_rate: int, *, origin: object) -> np.ndarray:
    sf = _soundfile()
    if sf is None:
        try:
            audio, sr = wav.read(source)
        except wav.NotPcmWav as e:
            raise UserError(f"cannot read audio ({e}; {_NO_SOUNDFILE})", where=loc) from None
        return _checked(audio, sr, loc, sample_rate, origin)
    try:
        audio, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else repr(e)
        if not isinstance(source, str):  # libsndfile names the in-memory buffer's object: say only why
            reason = reason.split(">: ", 1)[-1].strip("'\" ")
        raise UserError(f"cannot read audio ({reason})", where=loc) from None
    return _checked(audio, sr, loc, sample_rate, origin)


def _checked(audio: np.ndarray, sr: int, loc: str, sample_rate: int, origin: object) -> np.ndarray:
    if audio.size == 0:
        raise UserError("audio is empty (0 samples)", where=loc)
    finite = np.isfinite(audio)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        raise UserError(f"{int(finite.size - finite.sum())} non-finite samples (NaN or infinity; first at sample "
                        f"{first}, {first / sr:.3f} s)", where=loc)
    return convert(audio, int(sr), sample_rate, origin=origin)


def convert(audio: np.ndarray, sr: int, sample_rate: int, *, origin: object) -> np.ndarray:
    """`audio` ([samples, channels], or [samples] mono) as mono float32 at `sample_rate`: channels
    averaged, then soxr HQ resampling; each kind of conversion is announced once per process, naming
    `origin` (the first file or row that needed it)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    channels = audio.shape[1]
    audio = audio.mean(axis=1) if channels > 1 else audio[:, 0]
    if sr != sample_rate or channels > 1:
        _announce(int(sr), channels, sample_rate, origin)
    if sr != sample_rate:
        soxr = require("soxr", needed_for=f"resampling audio from {sr} Hz to {sample_rate} Hz")
        audio = soxr.resample(audio, sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def save_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM atomically: a crash never leaves a half-written wav at `path`.

    Resumable jobs treat "the wav exists" as "this item is done", so the file only appears under
    its final name once complete (temp file in the same folder, then ``os.replace``).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"save_wav expects mono 1-D audio, got shape {audio.shape}")
    sf = _soundfile()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if sf is None:
                wav.write(f, np.clip(audio, -1.0, 1.0), sample_rate)
            else:
                sf.write(f, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def duration(path: str | os.PathLike) -> float:
    """Length in seconds from the header only (no decoding), for filtering and batching."""
    p = Path(path)
    info = _info(p, str(p))
    return info.frames / info.samplerate
