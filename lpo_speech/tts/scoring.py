"""Scores of synthesized speech: the one definition eval, pair building and the codec ceiling share.

For each clip: the ASR judge's transcript `hyp` and its `wer`/`cer` against the prompt text
(lpo_speech.metrics normalization), `sim` (speaker similarity to a reference voice, if one is
given), `dnsmos` (DNSMOS overall MOS, optional: it is the slowest score), the stability flags of
lpo_speech.judges.stability and `failure`:

    failure = WER > 0.5  or  not terminated (no EOS before the length limit)  or  undecodable

An undecodable or empty clip is scored without running any model on it: wer = cer = 1, sim = 0,
dnsmos = NaN (left out of means).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lpo_speech.metrics import utterance_errors

FAILURE_WER = 0.5


@dataclass
class Clip:
    text: str
    wav: np.ndarray | None  # None when undecodable
    sr: int
    terminated: bool = True
    undecodable: bool = False


@dataclass
class TtsScorer:
    judge: dict[str, Any] = field(default_factory=lambda: {"type": "faster-whisper", "model": "bundled"})
    similarity: bool = True
    dnsmos: bool = True
    stability: bool = True
    lang: str = "en"

    def __post_init__(self) -> None:
        self._judge = None
        self._sim = None

    def _asr(self):
        if self._judge is None:
            import torch  # noqa: F401  (torch before ctranslate2: both are 2-3x slower otherwise)

            from lpo_speech.judges.asr import make_asr_judge

            spec = dict(self.judge)
            if spec.get("type", "faster-whisper") == "faster-whisper":
                spec.setdefault("cpu_threads", max(1, min(4, torch.get_num_threads())))
            self._judge = make_asr_judge(spec)
        return self._judge

    def score(self, clips: list[Clip], ref: tuple[np.ndarray, int] | None = None) -> list[dict[str, Any]]:
        """One dict per clip (see the module docstring); `ref` = (wav, sr) of the reference voice."""
        usable = [i for i, c in enumerate(clips) if not c.undecodable and c.wav is not None and c.wav.size]
        hyps = [""] * len(clips)
        if usable:
            sr = clips[usable[0]].sr
            assert all(clips[i].sr == sr for i in usable), "one sample rate per call"
            for i, h in zip(usable, self._asr().transcribe([clips[i].wav for i in usable], sr)):
                hyps[i] = h
        out = []
        for i, c in enumerate(clips):
            ok = i in usable
            errs = utterance_errors(c.text, hyps[i], self.lang)
            row: dict[str, Any] = {"hyp": hyps[i], "wer": float(errs["wer"]), "cer": float(errs["cer"]),
                                   "duration_s": round(c.wav.size / c.sr, 3) if ok else 0.0,
                                   "terminated": bool(c.terminated), "undecodable": bool(c.undecodable)}
            if self.similarity and ref is not None:
                row["sim"] = self._similarity(c, ref) if ok else 0.0
            if self.dnsmos:
                row["dnsmos"] = self._dnsmos(c) if ok else float("nan")
            if self.stability:
                from lpo_speech.judges.stability import stability_flags

                flags = stability_flags(c.wav if ok else None, c.sr, c.text, terminated=c.terminated,
                                        undecodable=c.undecodable or not ok)
                row.update({k: flags[k] for k in ("duration_out_of_range", "long_silence", "no_speech")})
            row["failure"] = bool(row["wer"] > FAILURE_WER or not c.terminated or c.undecodable or not ok)
            out.append(row)
        return out

    def _similarity(self, c: Clip, ref: tuple[np.ndarray, int]) -> float:
        if self._sim is None:
            from lpo_speech.judges.speaker import SpeakerSimilarity

            self._sim = SpeakerSimilarity()
        return round(self._sim.similarity(c.wav, c.sr, ref[0], ref[1]), 5)

    @staticmethod
    def _dnsmos(c: Clip) -> float:
        from lpo_speech.judges.quality import dnsmos

        v = dnsmos(c.wav, c.sr)["ovrl"]
        return round(v, 4) if not math.isnan(v) else float("nan")


def summarize(rows: list[dict[str, Any]], texts: list[str], lang: str = "en") -> dict[str, Any]:
    """Corpus metrics of scored clips: wer (corpus), wer_utt_mean, cer, failure_rate, sim, dnsmos, n."""
    from lpo_speech.metrics import corpus_scores

    m: dict[str, Any] = dict(corpus_scores(texts, [r["hyp"] for r in rows], lang))
    n = len(rows)
    m["failure_rate"] = sum(bool(r["failure"]) for r in rows) / n if n else 0.0
    m["not_terminated_rate"] = sum(not r["terminated"] for r in rows) / n if n else 0.0
    m["undecodable_rate"] = sum(bool(r["undecodable"]) for r in rows) / n if n else 0.0
    for key in ("sim", "dnsmos"):
        vals = [float(r[key]) for r in rows if key in r and r[key] is not None and not math.isnan(float(r[key]))]
        if vals:
            m[key] = sum(vals) / len(vals)
    durs = [r["duration_s"] for r in rows if not r["undecodable"]]
    if durs:
        m["duration_s_mean"] = sum(durs) / len(durs)
    return m
