"""Audio file I/O with errors a user can act on.

Every model in the project expects one fixed sample rate, and silently resampling (or averaging
channels) hides data bugs, so `load_audio` refuses anything that is not already right unless the
caller opts in with ``resample=True``. Non-finite samples (a float WAV holding NaN or infinities)
are refused too. Failures are `UserError`s naming the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from lpo_speech.errors import UserError


def _info(path: Path, where: str) -> sf._SoundFileInfo:
    """Header of `path`; `where` (which always contains the path) prefixes any error."""
    if not path.exists():
        raise UserError("audio file not found", where=where)
    if not path.is_file():
        raise UserError("not a regular file", where=where)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read audio ({reason})", where=where) from None


def load_audio(path: str | os.PathLike, *, sample_rate: int, where: str | None = None,
               resample: bool = False) -> np.ndarray:
    """Load a mono audio file as float32 samples in [-1, 1] at `sample_rate`.

    `where` names the origin in messages (e.g. ``data/train.jsonl:12``); the file path is always
    included. With ``resample=False`` a different rate is an error rather than a silent fix.
    """
    p = Path(path)
    loc = f"{where}: {p}" if where else str(p)
    info = _info(p, loc)
    if info.channels != 1:
        raise UserError(f"expected mono audio, found {info.channels} channels", where=loc)
    if info.samplerate != sample_rate and not resample:
        raise UserError(f"sample rate {info.samplerate} Hz, expected {sample_rate} Hz "
                        "(resample it, e.g. `sox in.wav -r 16000 out.wav`)", where=loc)
    try:
        audio, sr = sf.read(str(p), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise UserError(f"cannot read audio ({str(e).splitlines()[0] if str(e) else e!r})", where=loc) from None
    if audio.size == 0:
        raise UserError("audio is empty (0 samples)", where=loc)
    finite = np.isfinite(audio)
    if not finite.all():  # float WAVs can hold NaN / infinities; every feature and score would be NaN
        first = int(np.argmin(finite))
        raise UserError(f"{int(finite.size - finite.sum())} non-finite samples (NaN or infinity; first at sample "
                        f"{first}, {first / info.samplerate:.3f} s)", where=loc)
    if sr != sample_rate:
        import soxr  # only needed when resampling

        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
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
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
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
