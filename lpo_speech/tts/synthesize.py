"""Codec-LM speech synthesis: prompts -> sampled codec tokens -> audio (the model's codec).

`synthesize(lm, tok, prompts, n=...)` encodes each prompt (text + control tokens), samples `n`
responses with lpo_speech.tts.sampling (KV cache, batched, every response position constrained to its
codec slot's ids, EOS only at a frame boundary), then unflattens and decodes each response to a
waveform at the codec's rate. Prompts are sampled in groups of similar text length, each group
with its own length guard:

    max_new_tokens = min(max_seconds, seconds_per_char * chars + 1 s) * frame_rate * K

(also capped so prompt + response fits the model's positions; a phoneme-synchronous model,
lpo_speech.tts.text, gets one more token per prompt symbol and is sampled with its symbols forced
in order). A response that hits the guard has `terminated=False` (a synchronous one loses its
unfinished last frame); one whose ids the codec cannot decode has `undecodable=True` and no audio
(its reason in `error`) instead of stopping the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lpo_speech.errors import UserError
from lpo_speech.records import TtsPrompt
from lpo_speech.tts.text import TtsTokenizer


@dataclass
class Synth:
    tokens: list[int]  # model ids of the response, without EOS
    terminated: bool
    undecodable: bool = False
    wav: np.ndarray | None = None  # float32 at `sr`
    sr: int = 8000
    error: str | None = None
    seconds: float | None = None  # the frames' length when not decoded (decode_tokens(decode=False))

    @property
    def duration_s(self) -> float:
        if self.wav is None:
            return 0.0 if self.seconds is None else self.seconds
        return self.wav.size / self.sr


def decode_tokens(tok: TtsTokenizer, codec, tokens: list[int], terminated: bool = True, decode: bool = True) -> Synth:
    """Model ids -> Synth with audio, or undecodable (never raises for bad ids). decode=False checks the
    ids against the codec's slots but makes no audio: `seconds` is the frames' length (Codec2: exactly
    the decoded audio's), for a judge-free reward on a machine without the codec's library."""
    try:
        codes = codec.unflatten(tok.model_to_codec(tokens))
        wav = codec.decode(codes) if decode else None
    except UserError as e:
        return Synth(tokens=list(tokens), terminated=terminated, undecodable=True, sr=codec.sample_rate,
                     error=str(e))
    seconds = None if decode else len(codes) / codec.frame_rate
    return Synth(tokens=list(tokens), terminated=terminated, wav=wav, sr=codec.sample_rate, seconds=seconds)


def prompt_ids(tok: TtsTokenizer, prompt: TtsPrompt | dict, where: str = "prompt") -> list[int]:
    """A prompt line's ids; one that carries its "phonemes" (IPA) needs no phonemizer (TtsTokenizer.encode_prompt)."""
    p = prompt if isinstance(prompt, TtsPrompt) else TtsPrompt.from_dict(prompt, where)
    return tok.encode_prompt(p.text, emotion=p.emotion, intensity=p.intensity, speaker=p.extra.get("speaker"),
                             where=where if where != "prompt" else f"prompt {p.id}", phonemes=p.extra.get("phonemes"))


def synthesize(lm, tok: TtsTokenizer, prompts: list[TtsPrompt], *, n: int = 1, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, max_seconds: float = 12.0, seconds_per_char: float = 0.15,
               seed: int = 0, batch_size: int = 16, group: int = 64, codec=None, progress=None,
               threads: int | None = None, decode: bool = True) -> list[list[Synth]]:
    """`n` syntheses per prompt (result[i][j]); temperature 0 = greedy (then n is usually 1).
    decode=False: tokens and their duration only, no audio (decode_tokens).

    `threads`: torch threads while sampling (restored after); None (the default) keeps the process's
    setting. Stages pass `runtime.sampling_threads` (eval: `--sampling-threads`): the offline recipes
    ask for 1, because a tiny model's decoding step is many tiny ops, and on a busy 2-core machine two
    OpenMP threads made it ~30x slower (spinning threads waiting for each other)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _synthesize(lm, tok, prompts, n=n, temperature=temperature, top_k=top_k, top_p=top_p,
                           max_seconds=max_seconds, seconds_per_char=seconds_per_char, seed=seed,
                           batch_size=batch_size, group=group, codec=codec, progress=progress, decode=decode)
    finally:
        torch.set_num_threads(previous)


def _synthesize(lm, tok, prompts, *, n, temperature, top_k, top_p, max_seconds, seconds_per_char, seed,
                batch_size, group, codec, progress, decode) -> list[list[Synth]]:
    from lpo_speech.tts.sampling import sample

    codec = codec or tok.make_codec()
    k = tok.num_codebooks
    max_pos = int(getattr(lm.config, "max_position_embeddings", 4096))
    ids = [prompt_ids(tok, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].text))
    results: list[list[Synth] | None] = [None] * len(prompts)
    for g in range(0, len(order), group):
        idx = order[g:g + group]
        chars = max(len(prompts[i].text) for i in idx)
        seconds = min(max_seconds, seconds_per_char * chars + 1.0)
        frames = math.ceil(seconds * codec.frame_rate)
        room = (max_pos - max(len(ids[i]) for i in idx)) // k
        if room < 1:
            raise UserError(f"prompt {prompts[idx[0]].id}: no room for audio within the model's "
                            f"{max_pos} positions", where="synthesize")
        sync = [tok.sync_ids(ids[i]) for i in idx] if getattr(tok, "phoneme_sync", False) else None
        max_new = min(frames, room) * k
        if sync is not None:  # the symbols come on top of the frames, within the model's positions
            max_new = min(max_new + max(map(len, sync)), max_pos - max(len(ids[i]) for i in idx))
        drawn = sample(lm, [ids[i] for i in idx], n=n, max_new_tokens=max_new, eos_id=tok.eos_id,
                       temperature=temperature, top_k=top_k, top_p=top_p, slot_ranges=tok.slot_ranges,
                       seed=seed + g, batch_size=batch_size, pad_id=tok.pad_id, sync=sync,
                       sync_max_frames=getattr(tok, "max_symbol_frames", 0))
        for i, samples in zip(idx, drawn):
            results[i] = [decode_tokens(tok, codec, s.tokens if s.terminated or sync is None else
                                        _whole_frames(tok, s.tokens), s.terminated, decode) for s in samples]
        if progress is not None:
            progress(len(idx))
    return results  # type: ignore[return-value]


def _whole_frames(tok, tokens: list[int]) -> list[int]:
    """A synchronous response cut by the length guard, without its unfinished last frame (the plain
    layout's guard is a whole number of frames; symbols make this one's fall anywhere)."""
    codec_seen = [t for t, i in enumerate(tokens) if not tok.is_symbol(i)]
    extra = len(codec_seen) % tok.num_codebooks
    return tokens[:codec_seen[-extra]] if extra else list(tokens)


def sampling_options(cfg: Any) -> dict[str, Any]:
    """The keyword arguments of `synthesize` found on a config object (recipe section)."""
    keys = ("temperature", "top_k", "top_p", "max_seconds", "seconds_per_char", "batch_size")
    return {key: getattr(cfg, key) for key in keys if hasattr(cfg, key)}
