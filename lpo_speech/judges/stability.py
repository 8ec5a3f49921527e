"""Stability flags for codec-LM TTS samples: the failure modes WER alone misses or mis-weights.

Codec LMs fail in recognisable ways: they never emit end-of-speech (`not_terminated`), emit ids the
codec cannot decode (`undecodable`), babble or stall so the audio is far too long or short for the
text (`duration_out_of_range`), or go silent mid-utterance (`long_silence`). Each flag is a bool, so
a preference builder can reject a candidate outright; the raw numbers are returned alongside for
logging and for thresholds tuned later.

Duration bounds are speaking-rate bounds. English read speech runs ~12-15 letters/s (~2.5 words/s);
by default a clip is out of range below `units / max_rate` (faster than any intelligible speaker) or
above `units / min_rate + slack_s` (slower than any sane speaker, plus room for edge silence).
Chinese writes one syllable per character and read Mandarin runs ~4-5 characters/s, so Chinese text
is timed with the unit `cjk_chars` (the same count as `chars`, with bounds of its own).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from lpo_speech.errors import UserError

VAD_SR = 16000
# Per-second speaking-rate bounds by counting unit: (min_rate, max_rate).
RATE_BOUNDS = {"chars": (4.0, 25.0), "words": (0.8, 5.0), "cjk_chars": (1.5, 10.0)}


@lru_cache(maxsize=1)
def _vad_model():
    from silero_vad import load_silero_vad  # bundled JIT weights, no download

    return load_silero_vad()


def count_units(text: str, unit: str = "chars") -> int:
    """Letters+digits ("chars" and "cjk_chars": a Chinese character is one; punctuation/spaces
    ignored) or whitespace-separated words."""
    if unit in ("chars", "cjk_chars"):
        return sum(ch.isalnum() for ch in text)
    if unit == "words":
        return len(re.findall(r"\w+(?:['’]\w+)*", text))
    raise UserError(f"unknown rate unit {unit!r}; expected 'chars', 'cjk_chars' or 'words'", where="stability.unit")


def speech_segments(wav: np.ndarray, sr: int, *, threshold: float = 0.5) -> list[tuple[float, float]]:
    """Silero-VAD speech segments as (start_s, end_s) pairs."""
    import torch
    from silero_vad import get_speech_timestamps

    a = np.asarray(wav, dtype=np.float32).reshape(-1)
    if a.size and int(sr) != VAD_SR:
        import soxr

        a = soxr.resample(a, int(sr), VAD_SR).astype(np.float32)
    if a.size < 512:  # shorter than one VAD window
        return []
    stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(a)), _vad_model(),
                                   threshold=threshold, sampling_rate=VAD_SR)
    return [(s["start"] / VAD_SR, s["end"] / VAD_SR) for s in stamps]


def stability_flags(
    wav: np.ndarray | None,
    sr: int,
    text: str,
    *,
    terminated: bool,
    undecodable: bool,
    unit: str = "chars",
    min_rate: float | None = None,
    max_rate: float | None = None,
    slack_s: float = 0.75,
    max_silence_s: float = 1.0,
    vad_threshold: float = 0.5,
) -> dict[str, float | bool | int]:
    """Flags and raw numbers for one synthesized clip.

    Returns: not_terminated, undecodable, duration_out_of_range, long_silence, no_speech (bools;
    no_speech = VAD found no speech at all) and duration_s, min_duration_s, max_duration_s,
    max_silence_s (longest pause BETWEEN speech segments; edge silence is not counted),
    speech_s, units. With `undecodable=True` the audio may be None and is not analysed.
    """
    units = count_units(text, unit)
    if units == 0:
        raise UserError("text has no letters or digits to time against", where="stability.text")
    lo_rate, hi_rate = RATE_BOUNDS[unit]
    lo_rate = lo_rate if min_rate is None else float(min_rate)
    hi_rate = hi_rate if max_rate is None else float(max_rate)
    if not 0 < lo_rate < hi_rate:
        raise UserError(f"need 0 < min_rate < max_rate, got {lo_rate}, {hi_rate}", where="stability")
    min_dur, max_dur = units / hi_rate, units / lo_rate + slack_s

    a = np.zeros(0, np.float32) if wav is None or undecodable else np.asarray(wav, np.float32).reshape(-1)
    duration = a.size / float(sr) if a.size else 0.0
    segments = speech_segments(a, sr, threshold=vad_threshold) if a.size else []
    gaps = [b[0] - a_[1] for a_, b in zip(segments, segments[1:])]
    max_gap = max(gaps, default=0.0)
    return {
        "not_terminated": not terminated,
        "undecodable": bool(undecodable),
        "duration_out_of_range": bool(not undecodable and not min_dur <= duration <= max_dur),
        "long_silence": bool(max_gap > max_silence_s),
        "no_speech": bool(not undecodable and not segments),
        "duration_s": round(duration, 3),
        "min_duration_s": round(min_dur, 3),
        "max_duration_s": round(max_dur, 3),
        "max_silence_s": round(max_gap, 3),
        "speech_s": round(sum(e - s for s, e in segments), 3),
        "units": units,
    }
