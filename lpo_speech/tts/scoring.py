"""Scores of synthesized speech: the one definition eval, pair building and the codec ceiling share.

For each clip: the ASR judge's transcript `hyp` and its `wer`/`cer` against the prompt text
(lpo_speech.wer normalization), `sim` (speaker similarity to a reference voice, if one is
given), `dnsmos` (DNSMOS overall MOS, optional: it is the slowest score), `emotion` and
`emotion_top` (with an emotion scorer, for clips whose prompt asks for an emotion or style:
lpo_speech.judges.emotion), the stability flags of lpo_speech.judges.stability and `failure`:

    failure = WER > 0.5  or  not terminated (no EOS before the length limit)  or  undecodable

`lang` is the prompts' language. For Chinese (zh, and the cjk/ja aliases) the error rate is the CER
(lpo_speech.wer.headline: unsegmented Chinese is one "word" under whitespace splitting), so the
failure rule reads CER > 0.5, the speaking-rate bounds count characters (stability unit
`cjk_chars`), and a Whisper judge without its own `language` is given zh (or ja).

An undecodable or empty clip is scored without running any model on it: wer = cer = 1, sim = 0,
dnsmos = NaN (left out of means).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lpo_speech.distributed import resolve_device
from lpo_speech.wer import headline, utterance_errors

FAILURE_WER = 0.5  # the error rate above which a clip is a failure (WER; CER for Chinese)
WHISPER_LANGUAGES = {"zh": "zh", "ja": "ja"}  # scoring lang -> the language a Whisper judge is told


@dataclass
class Clip:
    text: str
    wav: np.ndarray | None  # None when undecodable
    sr: int
    terminated: bool = True
    undecodable: bool = False
    emotion: str | None = None  # the emotion or style the prompt asked for


@dataclass
class TtsScorer:
    judge: dict[str, Any] = field(default_factory=lambda: {"type": "faster-whisper", "model": "bundled"})
    similarity: bool = True
    dnsmos: bool = True
    stability: bool = True
    lang: str = "en"
    emotion: dict[str, Any] | None = None  # emotion scorer spec (lpo_speech.judges.emotion.make_emotion_scorer)
    # Where the judge, similarity and emotion models run: the judge device of the placement rule
    # (lpo_speech.distributed), as a torch device string. A spec's own `device` key wins (placed by
    # the same rule); the specs themselves stay as given, so they still name what made the scores.
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._judge = None
        self._sim = None
        self._emotion = None

    @staticmethod
    def _own_device(spec: dict[str, Any], what: str) -> dict[str, Any]:
        spec = dict(spec)
        if spec.get("device") is not None:
            spec["device"] = str(resolve_device(str(spec["device"]), where=f"{what}.device"))
        return spec

    def emotion_scorer(self):
        if self._emotion is None and self.emotion is not None:
            from lpo_speech.judges.emotion import make_emotion_scorer

            self._emotion = make_emotion_scorer(self._own_device(self.emotion, "emotion"), device=self.device)
        return self._emotion

    def asr_judge(self):
        if self._judge is None:
            import torch  # noqa: F401  (torch before ctranslate2: both are 2-3x slower otherwise)

            from lpo_speech.judges.asr import make_asr_judge

            spec = self._own_device(self.judge, "judge")
            spec.setdefault("device", self.device)
            kind = spec.get("type", "faster-whisper")
            if kind == "faster-whisper":
                spec.setdefault("cpu_threads", max(1, min(4, torch.get_num_threads())))
            if kind in ("faster-whisper", "transformers-whisper") and self.lang in WHISPER_LANGUAGES:
                # English keeps the judge as configured (a multilingual Whisper without one detects it)
                spec.setdefault("language", WHISPER_LANGUAGES[self.lang])
            self._judge = make_asr_judge(spec)
        return self._judge

    def score(self, clips: list[Clip], ref: tuple[np.ndarray, int] | None = None) -> list[dict[str, Any]]:
        """One dict per clip (see the module docstring); `ref` = (wav, sr) of the reference voice."""
        usable = [i for i, c in enumerate(clips) if not c.undecodable and c.wav is not None and c.wav.size]
        hyps = [""] * len(clips)
        if usable:
            sr = clips[usable[0]].sr
            assert all(clips[i].sr == sr for i in usable), "one sample rate per call"
            for i, h in zip(usable, self.asr_judge().transcribe([clips[i].wav for i in usable], sr)):
                hyps[i] = h
        emo: list[dict[str, Any]] = [{} for _ in clips]
        if self.emotion is not None and any(c.emotion for c in clips):
            from lpo_speech.judges.emotion import emotion_scores

            emo = emotion_scores(self.emotion_scorer(), [c.wav if i in usable else None for i, c in enumerate(clips)],
                                 clips[usable[0]].sr if usable else 16000, [c.text for c in clips],
                                 [c.emotion for c in clips])
        rate = headline(self.lang)  # the failure rule's error rate: cer for Chinese
        unit = "cjk_chars" if rate == "cer" else "chars"  # the speaking-rate bounds of the language
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
                                        undecodable=c.undecodable or not ok, unit=unit)
                row.update({k: flags[k] for k in ("duration_out_of_range", "long_silence", "no_speech")})
            row.update(emo[i])
            row["failure"] = bool(row[rate] > FAILURE_WER or not c.terminated or c.undecodable or not ok)
            out.append(row)
        return out

    def _similarity(self, c: Clip, ref: tuple[np.ndarray, int]) -> float:
        if self._sim is None:
            from lpo_speech.judges.speaker import SpeakerSimilarity

            self._sim = SpeakerSimilarity(device=self.device)
        return round(self._sim.similarity(c.wav, c.sr, ref[0], ref[1]), 5)

    @staticmethod
    def _dnsmos(c: Clip) -> float:
        from lpo_speech.judges.quality import dnsmos

        v = dnsmos(c.wav, c.sr)["ovrl"]
        return round(v, 4) if not math.isnan(v) else float("nan")


RUNAWAY_FACTOR = 3  # a transcript with more than 3x the reference's words (zh: characters) is a judge loop


def summarize(rows: list[dict[str, Any]], texts: list[str], lang: str = "en",
              wanted: list[str | None] | None = None) -> dict[str, Any]:
    """Corpus metrics of scored clips: wer (corpus), wer_utt_mean, cer, failure_rate, sim, dnsmos, n,
    runaway_rate and wer_no_runaway (below; for zh a word is a character, so wer = cer and the runaway
    check counts characters); with emotion scores and the wanted labels: emotion_acc (share of those
    clips whose most likely label is the wanted one; no audio counts as wrong), emotion_score (mean
    probability of the wanted label) and emotion_acc_by_label."""
    from lpo_speech.wer import corpus_scores, normalize

    m: dict[str, Any] = dict(corpus_scores(texts, [r["hyp"] for r in rows], lang))
    n = len(rows)
    # A judge can loop on unclear audio and write 10-20x the reference (one clip at WER 20 moves the
    # corpus WER of 100 short prompts by ~0.2): count such clips and give the WER without them.
    runaway = [len(normalize(r["hyp"], lang).split()) > RUNAWAY_FACTOR * max(1, len(normalize(t, lang).split()))
               for r, t in zip(rows, texts)]
    m["runaway_rate"] = sum(runaway) / n if n else 0.0
    refs = [t for t, bad in zip(texts, runaway) if not bad]
    hyps = [r["hyp"] for r, bad in zip(rows, runaway) if not bad]
    m["wer_no_runaway"] = corpus_scores(refs, hyps, lang)["wer"] if refs else float("nan")
    m["failure_rate"] = sum(bool(r["failure"]) for r in rows) / n if n else 0.0
    m["not_terminated_rate"] = sum(not r["terminated"] for r in rows) / n if n else 0.0
    m["undecodable_rate"] = sum(bool(r["undecodable"]) for r in rows) / n if n else 0.0
    for key in ("sim", "dnsmos"):
        vals = [float(r[key]) for r in rows if key in r and r[key] is not None and not math.isnan(float(r[key]))]
        if vals:
            m[key] = sum(vals) / len(vals)
    asked = [(r, w) for r, w in zip(rows, wanted or [None] * n) if w is not None and "emotion" in r]
    if asked:
        m["emotion_acc"] = sum(r["emotion_top"] == w for r, w in asked) / len(asked)
        m["emotion_score"] = sum(float(r["emotion"]) for r, _ in asked) / len(asked)
        by: dict[str, list[bool]] = {}
        for r, w in asked:
            by.setdefault(w, []).append(r["emotion_top"] == w)
        m["emotion_acc_by_label"] = {w: round(sum(v) / len(v), 4) for w, v in sorted(by.items())}
    durs = [r["duration_s"] for r in rows if not r["undecodable"]]
    if durs:
        m["duration_s_mean"] = sum(durs) / len(durs)
    return m
