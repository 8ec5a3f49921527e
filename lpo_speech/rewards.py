"""Rewards for online training: a weighted sum of terms read from a candidate's scores.

    cer       1 - tanh(3 * cer)       (CosyVoice 2's GRPO reward; in [0, 1], 1 for no error)
    wer       1 - tanh(3 * wer)
    sim       speaker similarity to the reference voice (cosine)
    emotion   probability of the emotion or style the prompt asks for (0 when it asks for none)
    dnsmos    DNSMOS overall MOS / 5
    failure   -1 for a failure (error rate > 0.5, no EOS before the length guard, undecodable), else 0
    duration  -|ln(duration / expected)|, expected = the text's letters / 14 per second (English read
              speech runs 12-15 letters/s: lpo_speech.judges.stability); an empty clip counts as 1/10 of
              expected. A speaking-rate prior that needs no judge.

`online.rewards` maps terms to weights (e.g. {cer: 1.0, sim: 0.5}); each term's mean is logged per
step beside the total. The ASR track scores transcripts, so it offers `wer` and `cer` only.
"""

from __future__ import annotations

import math
from typing import Any, Callable

LETTERS_PER_SECOND = 14.0


def _tanh_rate(key: str) -> Callable[[dict, str], float]:
    return lambda s, text: 1.0 - math.tanh(3.0 * float(s[key]))


def _duration(s: dict, text: str) -> float:
    expected = max(1, sum(ch.isalpha() for ch in text)) / LETTERS_PER_SECOND
    return -abs(math.log(max(float(s.get("duration_s") or 0.0), expected / 10) / expected))


TERMS: dict[str, Callable[[dict, str], float]] = {
    "cer": _tanh_rate("cer"),
    "wer": _tanh_rate("wer"),
    "sim": lambda s, text: float(s.get("sim", 0.0)),
    "emotion": lambda s, text: float(s.get("emotion", 0.0)),
    "dnsmos": lambda s, text: float(s["dnsmos"]) / 5.0 if math.isfinite(float(s.get("dnsmos", float("nan")))) else 0.0,
    "failure": lambda s, text: -1.0 if s.get("failure") else 0.0,
    "duration": _duration,
}
# The scores each term reads, beyond duration and termination (which every candidate has).
NEEDS = {"cer": "judge", "wer": "judge", "failure": "judge", "sim": "similarity", "emotion": "emotion",
         "dnsmos": "dnsmos", "duration": None}


def needed(weights: dict[str, float]) -> set[str]:
    """Which scorers the weighted terms need: judge, similarity, emotion, dnsmos."""
    return {NEEDS[k] for k, w in weights.items() if w and NEEDS[k] is not None}


def reward(scores: dict[str, Any], text: str, weights: dict[str, float]) -> tuple[float, dict[str, float]]:
    """(total, {term: value}) of one candidate."""
    terms = {k: TERMS[k](scores, text) for k in weights}
    return sum(w * terms[k] for k, w in weights.items()), terms
