"""The TTS track's online task (lpo_speech.online): the live codec LM synthesizes, the recipe's judges score.

Prompts are `build_pairs.prompts` (the first `build_pairs.limit`, when set). Candidates are drawn with
the batched KV-cache sampler (lpo_speech.tts.synthesize: the recipe's length guard, codec slots,
phoneme-synchronous symbols, `runtime.sampling_threads`), decoded by the model's codec on the judge
device, and scored by lpo_speech.tts.scoring with only the scorers the reward terms read (`cer` and
`wer` the ASR judge, `sim` speaker similarity, `emotion` the emotion scorer, `dnsmos` DNSMOS;
`duration` needs none: then nothing is decoded, a clip's duration is its frames' length, and the
codec's library need not be installed), in this process or, with `online.judge_workers: N`, in N worker processes
(lpo_speech.tts.judge_pool: the same scores). A candidate's tokens enter a pair with EOS when it terminated, as in
build-pairs.
"""

from __future__ import annotations

import time

import torch

from lpo_speech.distributed import resolve_device
from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair, TtsPrompt, load_jsonl
from lpo_speech.rewards import needed
from lpo_speech.tts.judge_pool import JudgePool
from lpo_speech.tts.recipe import TtsRecipe
from lpo_speech.tts.scoring import Clip, TtsScorer
from lpo_speech.tts.synthesize import prompt_ids, synthesize
from lpo_speech.tts.text import TtsTokenizer


class TtsOnline:
    def __init__(self, recipe: TtsRecipe, policy, adapter, info, dtype: torch.dtype):
        bp, self.online = recipe.build_pairs, recipe.online
        self.bp, self.policy = bp, policy
        prompts = load_jsonl(bp.prompts, TtsPrompt)
        self.items = prompts[:bp.limit] if bp.limit else prompts
        self.tok = TtsTokenizer.load(recipe.model.path)
        judge_device = resolve_device(recipe.runtime.judge_device or recipe.runtime.device,
                                      where="runtime.judge_device" if recipe.runtime.judge_device else "runtime.device")
        self.codec = self.tok.make_codec(judge_device)
        self.threads = recipe.runtime.sampling_threads
        wants = needed(self.online.rewards)
        if "judge" in wants and bp.judge is None:
            raise UserError("online.rewards read the ASR judge (cer, wer, failure): set build_pairs.judge",
                            where="build_pairs.judge")
        if "emotion" in wants and bp.emotion is None:
            raise UserError("online.rewards read emotion: set build_pairs.emotion (a scorer)", where="build_pairs.emotion")
        settings = dict(judge=bp.judge, similarity="similarity" in wants, dnsmos="dnsmos" in wants,
                        emotion=bp.emotion if "emotion" in wants else None, lang=bp.lang, device=str(judge_device))
        self.scorer = TtsScorer(**settings) if wants else None
        # judges in worker processes (lpo_speech.tts.judge_pool), or in this one
        self.pool = JudgePool(settings, self.online.judge_workers) if wants and self.online.judge_workers else None
        self.refs: dict = {}
        self.last_sample_s = 0.0
        if "similarity" in wants:  # every reference voice checked now, not at the step that first needs it
            from lpo_speech.tts.evaluate import load_reference

            for p in self.items:
                if load_reference(bp.prompts, p, None, self.refs) is None:
                    raise UserError("online.rewards read sim: every prompt needs speaker_audio",
                                    where=f"{bp.prompts}: id {p.id}")

    def text(self, item: TtsPrompt) -> str:
        return item.text

    def generate(self, policy, items: list[TtsPrompt], n: int, seed: int) -> list[list[dict]]:
        o, bp = self.online, self.bp
        t0 = time.perf_counter()
        synths = synthesize(policy.hf_model, self.tok, items, n=n, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p,
                            max_seconds=bp.max_seconds, seconds_per_char=bp.seconds_per_char, seed=seed,
                            batch_size=bp.batch_size, codec=self.codec, threads=self.threads,
                            decode=self.scorer is not None)  # a judge-free reward needs durations only
        self.last_sample_s = time.perf_counter() - t0
        if self.scorer is None:  # a judge-free reward (duration): what every candidate has
            scored = [[{"duration_s": round(s.duration_s, 3), "terminated": s.terminated,
                        "undecodable": s.undecodable} for s in group] for group in synths]
        else:
            from lpo_speech.tts.evaluate import load_reference

            groups = [([Clip(p.text, s.wav, s.sr, terminated=s.terminated, undecodable=s.undecodable, emotion=p.emotion)
                        for s in group], load_reference(bp.prompts, p, None, self.refs) if self.scorer.similarity else None)
                      for p, group in zip(items, synths)]
            scored = self.pool.score(groups) if self.pool else [self.scorer.score(c, ref) for c, ref in groups]
        return [[{"tokens": s.tokens, "terminated": s.terminated, "scores": sc} for s, sc in zip(group, scores)]
                for group, scores in zip(synths, scored)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def _response(self, c: dict) -> list[int]:
        toks = list(c["tokens"])
        return toks + [self.tok.eos_id] if c["terminated"] or not toks else toks

    def record(self, item: TtsPrompt, chosen: dict, rejected: dict | None) -> PreferencePair:
        return PreferencePair(id=item.id, prompt_id=item.id, prompt_tokens=prompt_ids(self.tok, item),
                              chosen_tokens=self._response(chosen),
                              rejected_tokens=None if rejected is None else self._response(rejected))
