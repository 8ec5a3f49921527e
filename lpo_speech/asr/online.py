"""The ASR track's online task (lpo_speech.online): the live recognizer samples transcripts, WER scores them.

Utterances are `build_pairs.manifest` (a JSONL manifest, a datasets dataset or a lhotse CutSet, converted
as build-pairs converts it: lpo_speech.asr.sources, into `<train.out_dir>/input/`). Each step's audio is
encoded once and `online.samples` transcripts are sampled from the policy being trained (Whisper or an
audio LLM: lpo_speech.asr.decode.live_asr_decoder); each is scored against the reference transcript
(WER and CER in `build_pairs.lang`), which the reward terms `wer` and `cer` read.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lpo_speech.asr.decode import live_asr_decoder
from lpo_speech.asr.recipe import AsrRecipe
from lpo_speech.asr.sources import InputColumns, prepare_manifest
from lpo_speech.audio import load_audio
from lpo_speech.errors import UserError
from lpo_speech.records import AsrUtterance, PreferencePair, load_jsonl, resolve_audio
from lpo_speech.wer import utterance_errors


class AsrOnline:
    def __init__(self, recipe: AsrRecipe, policy, adapter, info, dtype: torch.dtype):
        bp, self.online = recipe.build_pairs, recipe.online
        unknown = sorted(set(self.online.rewards) - {"wer", "cer"})
        if unknown:
            raise UserError(f"the ASR track scores transcripts: reward terms wer and cer only, not {', '.join(unknown)}",
                            where="online.rewards")
        if self.online.judge_workers:
            raise UserError("the ASR track's rewards are WER/CER of the sampled text, computed in the training "
                            "process: judge_workers is for the TTS judges; set 0", where="online.judge_workers")
        cols = InputColumns(text=bp.text_column, audio=bp.audio_column, id=bp.id_column, split=bp.split)
        manifest = prepare_manifest(bp.manifest, Path(recipe.train.out_dir) / "input", cols)
        self.items = load_jsonl(manifest, AsrUtterance)
        self.audio = {u.id: str(resolve_audio(manifest, u.audio).resolve()) for u in self.items}
        for u in self.items:  # every audio checked before training starts
            load_audio(self.audio[u.id], sample_rate=16_000, where=f"{manifest}: id {u.id}")
        self.lang = bp.lang
        self.decoder = live_asr_decoder(adapter, policy, info.device)
        self.last_sample_s = 0.0

    def close(self) -> None:  # nothing started beside the training process
        pass

    def text(self, item: AsrUtterance) -> str:
        return item.text

    def generate(self, policy, items: list[AsrUtterance], n: int, seed: int) -> list[list[dict]]:
        o = self.online
        t0 = time.perf_counter()
        wavs = [load_audio(self.audio[u.id], sample_rate=16_000) for u in items]
        torch.manual_seed(seed)
        states = self.decoder.encode(wavs)
        texts = self.decoder.transcribe(states=states, n=n, do_sample=True, temperature=o.temperature,
                                        top_p=o.top_p, top_k=o.top_k)
        self.last_sample_s = time.perf_counter() - t0
        return [[{"text": t, "scores": {k: float(v) for k, v in utterance_errors(u.text, t, self.lang).items()
                                        if k in ("wer", "cer")}} for t in group] for u, group in zip(items, texts)]

    def record(self, item: AsrUtterance, chosen: dict, rejected: dict | None) -> PreferencePair:
        return PreferencePair(id=item.id, prompt_id=item.id, audio=self.audio[item.id], chosen_text=chosen["text"],
                              rejected_text=None if rejected is None else rejected["text"])
