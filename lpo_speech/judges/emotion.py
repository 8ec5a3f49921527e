"""Emotion (or style) scorers: how likely a clip expresses the label its prompt asked for.

One interface serves the real recipe and the offline world:

    scorer.labels                                  the labels it knows
    scorer.probabilities(wavs, sr, texts) -> [N, len(labels)] array, rows sum to 1

`emotion_scores(scorer, wavs, sr, texts, wanted)` turns that into per-clip scores: `emotion` (the
probability of the wanted label, higher is better, what pair selection ranks on) and `emotion_top`
(the most likely label; `eval` counts `emotion_acc` as the share where it equals the wanted label).

Implementations:
* `ProsodyStyleClassifier` (`type: prosody`): the offline world's. Multinomial logistic regression
  (scikit-learn) over prosodic features of the audio and the text length: F0 level, spread and range
  (Praat pitch through parselmouth), voiced share, loudness and seconds per letter. Trained by
  `lpo-speech train-style-classifier` on the world's own styled speech (lpo_speech.tts.styles) and
  stored as plain JSON (no pickle), with its held-out accuracy.
* `Emotion2vecScorer` (`type: emotion2vec`, lpo_speech.judges.emotion2vec): FunASR emotion2vec for
  real recipes (9 labels).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lpo_speech.errors import UserError

FEATURES = ("logf0_median", "logf0_p10", "logf0_p90", "logf0_std", "voiced_share", "rms_db", "seconds_per_letter")


@runtime_checkable
class EmotionScorer(Protocol):
    labels: tuple[str, ...]

    def probabilities(self, wavs: list[np.ndarray], sr: int, texts: list[str]) -> np.ndarray: ...


def prosody_features(wav: np.ndarray, sr: int, text: str) -> np.ndarray:
    """The FEATURES of one clip. Silence or unvoiced audio gets the floor F0 (50 Hz) and voiced share 0."""
    import parselmouth

    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    letters = max(1, sum(ch.isalnum() for ch in text))
    if x.size < sr // 20 or not np.any(x):
        floor = math.log(50.0)
        return np.array([floor, floor, floor, 0.0, 0.0, -100.0, x.size / sr / letters])
    f0 = parselmouth.Sound(x, sr).to_pitch(time_step=0.01, pitch_floor=50.0, pitch_ceiling=400.0)
    f0 = f0.selected_array["frequency"]
    voiced = np.log(f0[f0 > 0]) if np.any(f0 > 0) else np.full(1, math.log(50.0))
    rms = float(np.sqrt(np.mean(x**2)))
    return np.array([np.median(voiced), np.percentile(voiced, 10), np.percentile(voiced, 90), voiced.std(),
                     float(np.mean(f0 > 0)), 20 * math.log10(max(rms, 1e-5)), x.size / sr / letters])


class ProsodyStyleClassifier:
    """Logistic regression over prosody_features (standardized). `fit`, `save`/`load` JSON."""

    def __init__(self, labels: list[str], mean: np.ndarray, scale: np.ndarray, coef: np.ndarray,
                 intercept: np.ndarray, info: dict | None = None):
        self.labels = tuple(labels)
        self.mean, self.scale = np.asarray(mean, float), np.asarray(scale, float)
        self.coef, self.intercept = np.asarray(coef, float), np.asarray(intercept, float)
        self.info = dict(info or {})

    @classmethod
    def fit(cls, feats: np.ndarray, labels: list[str], *, c: float = 1.0, seed: int = 0) -> "ProsodyStyleClassifier":
        from sklearn.linear_model import LogisticRegression

        names = sorted(set(labels))
        if len(names) < 2:
            raise UserError(f"a style classifier needs at least two labels, got {names}")
        mean, scale = feats.mean(0), feats.std(0) + 1e-6
        y = np.array([names.index(lab) for lab in labels])
        lr = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit((feats - mean) / scale, y)
        return cls(names, mean, scale, lr.coef_, lr.intercept_)

    def predict_features(self, feats: np.ndarray) -> np.ndarray:
        z = ((np.atleast_2d(feats) - self.mean) / self.scale) @ self.coef.T + self.intercept
        if z.shape[1] == 1:  # binary: sklearn keeps one row of weights for the second label
            z = np.concatenate([np.zeros_like(z), z], axis=1)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def probabilities(self, wavs: list[np.ndarray], sr: int, texts: list[str]) -> np.ndarray:
        return self.predict_features(np.stack([prosody_features(w, sr, t) for w, t in zip(wavs, texts)]))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "prosody", "features": list(FEATURES), "labels": list(self.labels),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist(), "info": self.info}

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ProsodyStyleClassifier":
        p = Path(path)
        if not p.is_file():
            raise UserError("no such style classifier (train one with `lpo-speech train-style-classifier`)",
                            where=str(p))
        try:
            d = json.loads(p.read_text())
            if d.get("type") != "prosody" or d.get("features") != list(FEATURES):
                raise ValueError(f"type {d.get('type')!r} / features {d.get('features')} are not this version's")
            return cls(d["labels"], d["mean"], d["scale"], d["coef"], d["intercept"], d.get("info"))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"not a style classifier file: {e}", where=str(p)) from None


def make_emotion_scorer(spec: dict[str, Any], device: str | None = None) -> EmotionScorer:
    """From a recipe's `emotion` mapping: {"type": "prosody", "path": ...} or
    {"type": "emotion2vec", "model": hub name or local dir, ...options}. `device`: where emotion2vec
    runs unless the mapping names one (stages pass the judge device); the prosody classifier is numpy."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind == "prosody":
        if set(spec) - {"path"} or "path" not in spec:
            raise UserError(f"the prosody scorer takes exactly 'path', got {sorted(spec)}", where="emotion")
        return ProsodyStyleClassifier.load(spec["path"])
    if kind == "emotion2vec":
        from lpo_speech.judges.emotion2vec import Emotion2vecScorer

        if device is not None:
            spec.setdefault("device", str(device))
        return Emotion2vecScorer(**spec)
    raise UserError(f"unknown emotion scorer type {kind!r} (prosody or emotion2vec)", where="emotion.type")


def emotion_scores(scorer: EmotionScorer, wavs: list[np.ndarray | None], sr: int, texts: list[str],
                   wanted: list[str | None]) -> list[dict[str, Any]]:
    """Per clip: {"emotion": P(wanted), "emotion_top": argmax label}; no wanted label or no audio -> {}
    for the former and P = 0 for the latter."""
    for w in wanted:
        if w is not None and w not in scorer.labels:
            raise UserError(f"the emotion scorer does not know {w!r} (it knows: {', '.join(scorer.labels)})",
                            where="prompt emotion")
    idx = [i for i, (w, a) in enumerate(zip(wanted, wavs)) if w is not None and a is not None and a.size]
    out: list[dict[str, Any]] = [{} if w is None else {"emotion": 0.0, "emotion_top": None} for w in wanted]
    if idx:
        probs = scorer.probabilities([wavs[i] for i in idx], sr, [texts[i] for i in idx])
        for i, p in zip(idx, probs):
            out[i] = {"emotion": round(float(p[scorer.labels.index(wanted[i])]), 5),
                      "emotion_top": scorer.labels[int(np.argmax(p))]}
    return out
