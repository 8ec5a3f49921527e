"""Audio checked against its text, before build-pairs makes a pair or eval scores a transcript.

An ASR manifest line can name audio that cannot carry its transcript, and nothing downstream notices:
pairs are trained on, and error rates taken from, audio the model never heard. Two such cases are
caught here (docs/formats.md, "Audio checked against its text"):

  * audio longer than the model hears: a fixed-window feature extractor (Whisper's, Qwen2-Audio's:
    `n_samples`, 30 s) pads or cuts every audio to its window, so the words past it are never heard;
  * far less speech than the transcript needs: the seconds of speech Silero VAD finds
    (lpo_speech.judges.stability.speech_segments, on the 16 kHz audio) below `needed_speech_s(text)`,
    the transcript read at rates no real speaker keeps up (MAX_RATE), less TOLERANCE_S for the VAD's
    edges. A silent or truncated file, or the transcript of another file, lands here.

`check_utterances` is the one check, for every ASR entry point that reads a manifest for build-pairs
(lpo_speech.asr.pairs) or eval (lpo_speech.evaluate); a dataset or lhotse CutSet is checked as the
manifest it was converted into, its rows named as the source names them (asr.sources.row_namer). The
first bad line stops the stage (`UserError`, one line: `file:line: field 'audio': ...`), or, with
`skip_bad` (--skip-bad), every bad line is left out and counted.

The audio is not decoded for the check alone: build-pairs measures each audio's speech while the feature
store decodes it (FeatureStore.ensure(speech=speech_seconds)), and keeps the result in the store's index, so a
rerun measures nothing; eval decodes each audio for its own checks anyway (through lpo_speech.audio's
cache of decoded files) and keeps each file's speech seconds for the rest of the process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lpo_speech.asr.features import SAMPLE_RATE, audio_key
from lpo_speech.errors import UserError, clip
from lpo_speech.records import AsrUtterance, resolve_audio

# The fastest rates real speech keeps up, per second of speech (pauses excluded: VAD seconds), by script.
# Alphabetic and other scripts count letters and digits (not spaces or punctuation): fast English runs
# about 6-7 syllables a second at 3-3.5 letters each (about 20-23 letters/s), read speech 12-15. CJK
# characters (Han, kana, Hangul) count one each: fast Mandarin runs 6-7 syllables (characters) a second,
# fast Japanese 8-10 morae (about one kana each; a kanji holds more), fast Korean 7-8 syllables.
MAX_RATE = {"letters": 30.0, "cjk": 10.0}
TOLERANCE_S = 0.5  # speech the VAD may miss at the edges (its 250 ms minimum segment, 30 ms padding)
# Silero's speech probability that counts as speech here: lower than its usual 0.5, since a missed word
# refuses a good line while extra speech only lets a bad one pass. Silence and steady noise (white,
# brown, hum) score no speech even at 0.1; speech under brown noise at -24.5 dB SNR (the demo's
# out-of-domain set) scores 0 s at 0.5 and most of its length at 0.2. The feature store keeps what this
# measured: change it, and clear the stores' `speech_s` (delete `features/`) for the new value to apply.
VAD_THRESHOLD = 0.2
_CJK = ((0x1100, 0x11FF), (0x2E80, 0x2FDF), (0x3040, 0x30FF), (0x3130, 0x318F), (0x31F0, 0x31FF),
        (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF),
        (0xFF66, 0xFF9F), (0x20000, 0x3FFFF))


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _CJK)


def text_units(text: str) -> tuple[int, int]:
    """(letters and digits outside CJK, CJK characters) of a transcript; spaces and punctuation are not spoken."""
    letters = cjk = 0
    for ch in text:
        if ch.isalnum():
            if _is_cjk(ch):
                cjk += 1
            else:
                letters += 1
    return letters, cjk


def needed_speech_s(text: str) -> float:
    """The fewest seconds of speech `text` takes, read at MAX_RATE."""
    letters, cjk = text_units(text)
    return letters / MAX_RATE["letters"] + cjk / MAX_RATE["cjk"]


def speech_seconds(wav: np.ndarray) -> float:
    """Seconds of speech Silero VAD finds in 16 kHz mono audio (its segments' total length, at VAD_THRESHOLD)."""
    from lpo_speech.judges.stability import speech_segments

    segments = speech_segments(wav, SAMPLE_RATE, threshold=VAD_THRESHOLD)
    return round(sum(end - start for start, end in segments), 3)


def problem(text: str, samples: int, speech: Callable[[], float | None], window: int | None) -> str | None:
    """Why audio of `samples` 16 kHz samples cannot carry `text` for a model that hears `window`
    samples (None: any length), or None when it can. `speech()` gives the audio's speech seconds; it
    is asked only when the answer depends on it."""
    seconds = samples / SAMPLE_RATE
    if window is not None and samples > window:
        return (f"is {seconds:.1f} s long, longer than the {window / SAMPLE_RATE:g} s the model hears (its feature "
                f"extractor's window; words past it are never heard): cut it into shorter utterances")
    needed = needed_speech_s(text)
    if needed <= TOLERANCE_S:
        return None  # a word or two: too short for the VAD to judge
    if seconds < needed - TOLERANCE_S:  # less audio than the text needs, speech or not: no VAD needed
        found = None
    else:
        found = speech()
        if found is None or found >= needed - TOLERANCE_S:
            return None
    letters, cjk = text_units(text)
    count = " and ".join(f"{n} {what}" for n, what in ((letters, "letters/digits"), (cjk, "CJK characters")) if n)
    held = f"is {seconds:.1f} s long" if found is None else \
        f"holds {found:.1f} s of speech (Silero VAD) in {seconds:.1f} s"
    return (f"{held}, but its transcript ({count}) takes at least {needed:.1f} s even spoken fast: silent or cut "
            "short, or not the audio of this transcript")


Measure = Callable[[Path, str], "tuple[int, Callable[[], float | None]]"]


@dataclass
class Checked:
    """What `check_utterances` kept, in manifest order, and why it left out the rest (one line each)."""

    kept: list[AsrUtterance]
    skipped: list[str] = field(default_factory=list)


def check_utterances(rows: Sequence[tuple[int, AsrUtterance]], manifest: str | Path, *, window: int | None,
                     measure: Measure, skip_bad: bool = False,
                     name: Callable[[int, str], str] | None = None) -> Checked:
    """The manifest's rows ((line, utterance), as records.load_numbered gives them) whose audio can
    carry their transcript (`problem`), for a model that hears `window` samples. `measure(path, where)`:
    (samples, a callable giving the speech seconds) of one audio, raising the file's own errors (missing,
    unreadable) as the stages always named them (`manifest: id ID: path: ...`). `name(line, id)`: how a
    line and its audio are named for a converted dataset or CutSet (asr.sources.row_namer); default
    `manifest:line: field 'audio': PATH`. Without `skip_bad` the first bad line is a UserError (with the
    count of bad lines when there are more); with it, bad lines are left out and listed in `skipped`,
    and a manifest with no good line left is a UserError."""
    kept, bad = [], []
    for line, u in rows:
        samples, speech = measure(resolve_audio(manifest, u.audio), f"{manifest}: id {u.id}")
        why = problem(u.text, samples, speech, window)
        if why is None:
            kept.append(u)
        elif name is None:
            bad.append(f"{manifest}:{line}: field 'audio': {clip(u.audio, 80)} {why}")
        else:
            bad.append(f"{name(line, u.id)}: the audio {why}")
    if bad and not skip_bad:
        tail = f"{len(bad)} such lines in all; --skip-bad leaves them out" if len(bad) > 1 else \
            "--skip-bad leaves such lines out"
        raise UserError(f"{bad[0]} ({tail})")
    if bad and not kept:
        raise UserError(f"{bad[0]} (and every other line of {manifest}: nothing left to use)")
    return Checked(kept, bad)


def announce(checked: Checked, stage: str, *, shown: int = 3) -> None:
    """Say on stderr what --skip-bad left out: the count, and the first `shown` reasons."""
    if not checked.skipped:
        return
    n, total = len(checked.skipped), len(checked.skipped) + len(checked.kept)
    print(f"{stage}: --skip-bad left out {n} of {total} utterances whose audio cannot carry their transcript:",
          file=sys.stderr)
    for reason in checked.skipped[:shown]:
        print(f"  {reason}", file=sys.stderr)
    if n > shown:
        print(f"  ... and {n - shown} more", file=sys.stderr)


def stored_measure(store) -> Measure:
    """`measure` from a feature store filled with `speech=speech_seconds` (build-pairs): nothing decoded again."""
    def measure(path: Path, where: str):
        entry = store.ensure(path, where, speech=speech_seconds)  # found: filled a moment ago
        return entry.samples, lambda: entry.speech_s
    return measure


_SPEECH: dict[tuple, float] = {}  # (resolved path, size, mtime) -> speech seconds, for this process


def decoded_measure() -> Measure:
    """`measure` that decodes through lpo_speech.audio.load_audio (its cache of decoded files: eval decodes
    each audio again to transcribe it) and runs the VAD only when asked, once per audio file."""
    from lpo_speech.audio import load_audio

    def measure(path: Path, where: str):
        wav = load_audio(path, sample_rate=SAMPLE_RATE, where=where)

        def speech() -> float:
            key = audio_key(path)
            if key not in _SPEECH:
                _SPEECH[key] = speech_seconds(wav)
            return _SPEECH[key]
        return len(wav), speech
    return measure


def model_window(path: str) -> int | None:
    """The samples a model's feature extractor hears (features.window_samples), or None without one."""
    from transformers import AutoFeatureExtractor

    from lpo_speech.adapters.causal_lm import load_pretrained
    from lpo_speech.asr.features import window_samples

    return window_samples(load_pretrained(AutoFeatureExtractor, path))
