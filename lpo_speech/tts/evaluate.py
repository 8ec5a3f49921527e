"""`lpo-speech eval --wer` for codec-LM TTS models: synthesize a prompt manifest and judge it.

For each prompt ({"id", "text", optional "emotion", "intensity", "speaker_audio"}), one synthesis
(greedy by default; `temperature > 0` samples) is decoded to `<out>/wavs/<id>.wav` and scored by
lpo_speech.tts.scoring: the ASR judge's transcript (`--judge`; the default, the bundled Whisper
tiny.en, is English only) against the text (WER/CER, lpo_speech.wer normalization in `lang`),
speaker similarity to the prompt's `speaker_audio` (or `ref_audio`), DNSMOS, and the stability
flags. The codec LM runs on `device` in `dtype`, the judge, scorers and a neural codec
on `judge_device` (the placement rule of lpo_speech.distributed). Writes `<out>/utterances.jsonl` (one
line per prompt; resumable: an interrupted run continues with the prompts not yet written, and only
from the same model, prompts and settings, compared by content (lpo_speech.stages); sharded across
processes under torchrun) and `<out>/metrics.json`. Every prompt and reference voice is checked before
anything is written. Metrics:

  wer            corpus WER of the judge transcripts
  wer_utt_mean   mean per-utterance WER (the Seed-TTS-eval convention)
  cer            corpus CER (the headline for `lang` zh, where words are characters and wer = cer)
  failure_rate   share of prompts with WER (zh: CER) > 0.5, no EOS before the length guard, or
                 undecodable tokens
  sim            mean speaker similarity (resemblyzer cosine) to the reference voice
  dnsmos         mean DNSMOS overall MOS (undecodable/empty clips left out)
  n              prompts scored
  words          the prompts' words once normalized (characters for zh): what the corpus WER divides by
  runaway_rate   share of prompts whose judge transcript has more than 3x the reference's words (zh:
                 characters): the judge looping on unclear audio, which alone can move corpus WER a lot
  wer_no_runaway corpus WER without those prompts (compare models on the same prompts: leave out
                 the union of their runaway prompts)
  emotion_acc    with an emotion scorer (`--emotion-scorer`), over prompts that ask for an emotion or
                 style: share whose most likely label is the one asked for
  emotion_score  mean probability of the label asked for (and emotion_acc_by_label)
(plus not_terminated_rate, undecodable_rate, duration_s_mean).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lpo_speech.distributed import init_distributed
from lpo_speech.errors import UserError
from lpo_speech.wer import headline, reference_words
from lpo_speech.records import TtsPrompt, load_jsonl, resolve_audio
from lpo_speech.stages import OVERWRITE_HINT, check_settings, created_outputs, input_file, model_folder, run_sharded

REF_SR = 16_000


def load_reference(manifest: str | Path, prompt: TtsPrompt, ref_audio: str | None,
                   cache: dict[str, tuple[np.ndarray, int]]) -> tuple[np.ndarray, int] | None:
    from lpo_speech.audio import load_audio

    if prompt.speaker_audio:
        path = resolve_audio(manifest, prompt.speaker_audio)
        where = f"{manifest}: id {prompt.id}: speaker_audio"
    elif ref_audio:
        path, where = Path(ref_audio), "--ref-audio"
    else:
        return None
    key = str(path)
    if key not in cache:
        cache[key] = (load_audio(path, sample_rate=REF_SR, where=where), REF_SR)
    return cache[key]


# The layout of an utterance row and how it is computed: raise it when either changes, so rows made by
# older code are not resumed as if this code had made them.
SCHEMA = 1


@dataclass
class TtsEvalInputs:
    """What check_tts_eval checked: the prompts, each prompt's reference voice (or None), the settings
    that make a row (lpo_speech.stages), the weights' dtype, the judge device and the decoding."""

    prompts: list[TtsPrompt]
    ref_of: dict[str, tuple[np.ndarray, int] | None]
    settings: dict
    weights: Any
    judge_at: Any
    decoding: str


def check_tts_eval(model_dir: str, prompts_manifest: str, out_dir: str | Path, *, temperature: float = 0.0,
                   top_p: float = 1.0, seed: int = 0, judge: dict | None = None, dnsmos: bool = True,
                   ref_audio: str | None = None, lang: str = "en", device: str = "auto",
                   judge_device: str | None = None, dtype: str = "auto", max_seconds: float = 12.0,
                   emotion: dict | None = None, overwrite: bool = False, **_ignored: Any) -> TtsEvalInputs:
    """What eval_tts checks before it writes anything or loads weights: the options, every prompt
    against the model's tokenizer, every reference voice, and an earlier output in `out_dir` (other
    model, data or settings stop in one line unless `overwrite`)."""
    import torch

    from lpo_speech.distributed import resolve_device
    from lpo_speech.precision import dtype_name, resolve_dtype
    from lpo_speech.tts.synthesize import prompt_ids
    from lpo_speech.tts.text import TtsTokenizer

    if _ignored.get("beam", 1) not in (None, 1):
        raise UserError("--beam: TTS models decode greedily or by sampling (use --temperature)")
    judge = judge or {"type": "faster-whisper", "model": "bundled"}
    if headline(lang) == "cer" and (judge.get("type", "faster-whisper"), judge.get("model", "bundled")) == (
            "faster-whisper", "bundled"):
        raise UserError(f"--lang {lang}: the default judge, the bundled Whisper tiny.en, transcribes English only; "
                        "name a judge of the language, e.g. --judge funasr:paraformer-zh")
    info = init_distributed(device)
    weights = resolve_dtype(dtype, info.device, where="--dtype")
    judge_at = resolve_device(judge_device or device, where="--judge-device" if judge_device else "--device")
    prompts = load_jsonl(prompts_manifest, TtsPrompt)
    tok = TtsTokenizer.load(model_dir)  # the model's token table (config.json): no weights needed
    for i, p in enumerate(prompts, 1):  # every prompt error before any synthesis, one line each
        prompt_ids(tok, p, where=f"{prompts_manifest}:{i}")
    refs: dict[str, tuple[np.ndarray, int]] = {}
    ref_of = {p.id: load_reference(prompts_manifest, p, ref_audio, refs) for p in prompts}
    decoding = "greedy" if temperature == 0 else f"sample t={temperature} top_p={top_p} seed={seed}"
    # What shapes a row: a rerun into the same folder (a resumed eval) must keep it.
    settings = {"model": model_folder(model_dir), "data": input_file(prompts_manifest), "schema": SCHEMA,
                "decoding": decoding, "max_seconds": max_seconds,
                "judge": judge, "dnsmos": dnsmos,
                "emotion": emotion, "ref_audio": input_file(ref_audio, legacy=ref_audio) if ref_audio else ref_audio,
                "lang": lang,
                # bfloat16 samples other tokens; float32 (every run before dtypes were kept) adds no key
                **({"dtype": dtype_name(weights)} if weights != torch.float32 else {})}
    if not overwrite:
        check_settings(Path(out_dir) / "utterances.jsonl", settings, record=False, hint=OVERWRITE_HINT)
    return TtsEvalInputs(prompts, ref_of, settings, weights, judge_at, decoding)


def eval_tts(model_dir: str, prompts_manifest: str, out_dir: str | Path, *, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, batch_size: int = 16, judge: dict | None = None,
             dnsmos: bool = True, ref_audio: str | None = None, lang: str = "en", device: str = "auto",
             judge_device: str | None = None, dtype: str = "auto", sampling_threads: int | None = None,
             max_seconds: float = 12.0, emotion: dict | None = None, quiet: bool = False, overwrite: bool = False,
             **_ignored: Any) -> dict:
    """`device`, `judge_device` (None: the device): placed by lpo_speech.distributed's rule; `dtype`
    (auto, float32, bfloat16) by lpo_speech.precision; `sampling_threads`: torch threads while
    sampling (None: the process's); `overwrite`: discard an earlier output made another way (its
    rows, wavs and metrics) instead of stopping."""
    import torch  # noqa: F401  (before ctranslate2)

    from lpo_speech.audio import save_wav
    from lpo_speech.tts.model import load_codec_lm
    from lpo_speech.tts.scoring import Clip, TtsScorer, summarize
    from lpo_speech.tts.synthesize import synthesize

    # Before the weights load: a bad prompt or voice, or a folder made another way, stops at once.
    checked = check_tts_eval(model_dir, prompts_manifest, out_dir, temperature=temperature, top_p=top_p, seed=seed,
                             judge=judge, dnsmos=dnsmos, ref_audio=ref_audio, lang=lang, device=device,
                             judge_device=judge_device, dtype=dtype, max_seconds=max_seconds, emotion=emotion,
                             overwrite=overwrite, **_ignored)
    prompts, ref_of = checked.prompts, checked.ref_of
    info = init_distributed(device)
    lm, tok = load_codec_lm(model_dir, info.device, checked.weights)
    codec = tok.make_codec(checked.judge_at)
    scorer = TtsScorer(judge=judge or {"type": "faster-whisper", "model": "bundled"}, dnsmos=dnsmos, lang=lang,
                       emotion=emotion, device=str(checked.judge_at))
    if emotion is not None:  # every asked-for label must be one the scorer knows, before any synthesis
        from lpo_speech.judges.emotion import emotion_scores

        emotion_scores(scorer.emotion_scorer(), [None] * len(prompts), 16000, [p.text for p in prompts],
                       [p.emotion.strip().lower() if p.emotion else None for p in prompts])
    out_dir = Path(out_dir)

    def process(chunk: list[TtsPrompt]) -> list[dict]:
        # The seed of a chunk follows from its first prompt, so any process count and any resume
        # point draw the same samples.
        chunk_seed = random.Random(f"{seed}:{chunk[0].id}").randrange(2**31)
        synths = synthesize(lm, tok, chunk, n=1, temperature=temperature, top_p=top_p, max_seconds=max_seconds,
                            seed=chunk_seed, batch_size=batch_size, codec=codec, threads=sampling_threads)
        out = []
        for p, (syn,) in zip(chunk, synths):
            clip = Clip(p.text, syn.wav, syn.sr, terminated=syn.terminated, undecodable=syn.undecodable,
                        emotion=p.emotion.strip().lower() if p.emotion else None)
            (row,) = scorer.score([clip], ref_of[p.id])
            wav_rel = None
            if syn.wav is not None and syn.wav.size:
                wav_rel = f"wavs/{p.id}.wav"
                save_wav(out_dir / wav_rel, syn.wav, syn.sr)
            out.append({"id": p.id, "text": p.text, **row, "tokens": len(syn.tokens), "wav": wav_rel,
                        **({"error": syn.error} if syn.error else {})})
        return out

    # Sharded across processes under torchrun (lpo_speech.stages): resumable, merged in prompt order; the
    # settings are recorded there, after the model loaded.
    with created_outputs(out_dir):
        rows = {r["id"]: r for r in run_sharded(out_dir / "utterances.jsonl", prompts, key=lambda p: p.id,
                                                 process=process, batch_size=batch_size, desc=f"eval {out_dir.name}",
                                                 unit="utt", device=device, quiet=quiet, settings=checked.settings,
                                                 overwrite=overwrite,
                                                 also=[out_dir / "wavs", out_dir / "metrics.json"])}
        ordered = [rows[p.id] for p in prompts]
        wanted = [p.emotion.strip().lower() if p.emotion and emotion is not None else None for p in prompts]
        metrics = {**summarize(ordered, [p.text for p in prompts], lang, wanted),
                   "words": reference_words([p.text for p in prompts], lang), "model": str(model_dir),
                   "data": str(prompts_manifest), "decoding": checked.decoding}
        if info.is_main:
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def is_tts_model(model_dir: str) -> bool:
    cfg = Path(model_dir) / "config.json"
    return cfg.is_file() and "tts" in json.loads(cfg.read_text())
