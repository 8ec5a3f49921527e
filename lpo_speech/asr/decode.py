"""Decoding an ASR model: greedy, beam N-best and sampled transcripts, batched.

Two decoders with one interface (`encode`, `encode_files`, `transcribe`, `encoder_fingerprint`), chosen
by the model's config (`make_asr_decoder`): `AsrDecoder` for a speech-seq2seq model (Whisper) and
`AudioLLMDecoder` for an audio LLM (Qwen2-Audio). Each loads through its track adapter so features and
prompts are made exactly as in training; `encode_files` reads them from the adapter's feature store
(lpo_speech.asr.features), where build-pairs computed them once per utterance. The encoder is most of the cost on CPU (a 30 s window per utterance), so callers may
pass encoder states computed once and shared between models whose encoders are identical
(`encoder_fingerprint`), e.g. a base model and its LPO descendant trained with a frozen encoder.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from lpo_speech.adapters.audio_llm import FAMILIES, AudioLLMAdapter, splice
from lpo_speech.adapters.causal_lm import load_pretrained
from lpo_speech.adapters.whisper import WhisperAdapter
from lpo_speech.recipe import ModelConfig

AUDIO_LLM_TYPES = frozenset(FAMILIES)  # config model types that decode as audio LLMs


def make_asr_decoder(path: str, device: str | torch.device = "cpu", *, dtype: torch.dtype = torch.float32,
                     model_cfg: ModelConfig | None = None, max_new_tokens: int = 128):
    """The decoder for the ASR model at `path`, by its config's `model_type`: an audio LLM (Qwen2-Audio)
    or a speech-seq2seq model (Whisper). `model_cfg` (a recipe's model section) gives Whisper's
    language/task or the audio LLM's instruction."""
    from transformers import AutoConfig

    if load_pretrained(AutoConfig, path).model_type in AUDIO_LLM_TYPES:
        return AudioLLMDecoder(path, device, dtype=dtype, instruction=getattr(model_cfg, "instruction", None),
                               max_new_tokens=max_new_tokens)
    return AsrDecoder(path, device, dtype=dtype, language=getattr(model_cfg, "language", None),
                      task=getattr(model_cfg, "task", None), max_new_tokens=max_new_tokens)


def live_asr_decoder(adapter, pair_model, device: torch.device, *, max_new_tokens: int = 128):
    """A decoder over a model being trained (online training: lpo_speech.asr.online): the trainer's
    adapter and pair model, no second load. Under LoRA the decoder runs the base model with the
    adapter layers peft injected into it, so samples come from the adapted policy."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    cls = AudioLLMDecoder if isinstance(adapter, AudioLLMAdapter) else AsrDecoder
    dec = cls.__new__(cls)
    hf = pair_model.hf_model
    base = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
    dec.adapter, dec.device, dec.max_new_tokens = adapter, torch.device(device), max_new_tokens
    dec.dtype = next(base.parameters()).dtype
    dec.model = base
    if cls is AudioLLMDecoder:
        dec.pair_model = pair_model
        gen_eos = base.generation_config.eos_token_id
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
        dec.eos_ids = list(dict.fromkeys([adapter.eos, *gen_eos]))
    else:
        dec.language, dec.task = adapter.language, adapter.task
    return dec


def _fingerprint(module: torch.nn.Module, kind: str = "") -> str:
    """A hash of `module`'s weights; `kind` keeps apart encoders with the same weights whose states
    differ (Whisper's encoder, and an audio LLM's tower holding those weights, pools and masks)."""
    h = hashlib.sha1(kind.encode())
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


class AsrDecoder:
    """`device` and `dtype` come from the caller's placement (lpo_speech.distributed.init_distributed,
    lpo_speech.precision.resolve_dtype): the weights are loaded and run in `dtype`."""

    def __init__(self, path: str, device: str | torch.device = "cpu", *, dtype: torch.dtype = torch.float32,
                 language: str | None = None, task: str | None = None, max_new_tokens: int = 128):
        from transformers.utils import logging

        logging.set_verbosity_error()  # generate() warns about its own Whisper defaults on every call
        self.adapter = WhisperAdapter(ModelConfig(path=path, adapter="whisper", language=language, task=task))
        self.model = self.adapter.load(path, torch.device(device), dtype).model.eval()
        self.device, self.dtype = torch.device(device), dtype
        self.language, self.task = self.adapter.language, self.adapter.task  # as the adapter resolved them
        self.max_new_tokens = max_new_tokens

    def encoder_fingerprint(self) -> str:
        return _fingerprint(self.model.get_encoder())

    @torch.no_grad()
    def encode(self, wavs: list[np.ndarray]) -> torch.Tensor:
        """Encoder states [N, T, D] for a batch of 16 kHz waveforms."""
        return self._encode(self.adapter.extract(list(wavs)))

    @torch.no_grad()
    def encode_files(self, paths: list, wheres: list[str | None]) -> torch.Tensor:
        """Encoder states [N, T, D] for audio files, from the adapter's feature store (computed there
        first if missing; errors name `wheres`)."""
        store = self.adapter.feature_store()
        return self._encode(self.adapter.batch_features([store.ensure(p, w) for p, w in zip(paths, wheres)]))

    def _encode(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.get_encoder()(feats.to(self.device, self.dtype)).last_hidden_state

    @torch.no_grad()
    def transcribe(self, wavs: list[np.ndarray] | None = None, *, states: torch.Tensor | None = None, n: int = 1,
                   num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                   top_k: int = 0) -> list[list[str]]:
        """n transcripts per input (greedy for n=1, the beam's n best, or n samples), all inputs at
        once, from waveforms or from precomputed encoder `states`."""
        if states is None:
            states = self.encode(wavs)
        kwargs = dict(max_new_tokens=self.max_new_tokens, num_return_sequences=n)
        if do_sample:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k or None)
        else:
            kwargs.update(do_sample=False, num_beams=max(num_beams, n))
        if self.language or self.task:
            kwargs.update(language=self.language, task=self.task)
        states = states.to(self.device, next(self.model.parameters()).dtype)
        encoded = BaseModelOutput(last_hidden_state=states)
        if n == 1:
            out = self.model.generate(encoder_outputs=encoded, **kwargs)
        else:
            # Whisper's own generate() turns num_return_sequences into repeated inputs_features (None
            # here: the states are precomputed) and returns each copy's top-1, so no beam N-best. The
            # generic seq2seq generate from the training prefix (start, language, task, no timestamps:
            # the adapter's) expands the encoder states itself and keeps the N best beams or N samples;
            # the generation config's token suppression applies as in Whisper's.
            from transformers.generation import GenerationMixin

            kwargs.pop("language", None), kwargs.pop("task", None)
            prefix = torch.tensor([self.adapter.prefix] * states.shape[0], device=self.device)
            out = GenerationMixin.generate(self.model, encoder_outputs=encoded, decoder_input_ids=prefix, **kwargs)
        texts = self.adapter.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [[t.strip() for t in texts[i * n:(i + 1) * n]] for i in range(states.shape[0])]


class AudioLLMDecoder:
    """An audio LLM's transcripts: the audio tower runs once per utterance (`encode`), then every
    decoding (greedy, beams, samples) starts from the prompt embeddings with the projected audio spliced
    in at the placeholder positions, left padded, through the model's own `generate(inputs_embeds=...)`.

    `encode` returns the tower's outputs for the whole window plus one last channel that marks the
    utterance's valid frames (1.0) and the padding (0.0): a fixed shape per utterance, so states can be
    cached and stacked like Whisper's (lpo_speech.evaluate), while the prompt of each utterance (its
    number of placeholder tokens) follows from the marks alone."""

    def __init__(self, path: str, device: str | torch.device = "cpu", *, dtype: torch.dtype = torch.float32,
                 instruction: str | None = None, max_new_tokens: int = 128):
        from transformers.utils import logging

        logging.set_verbosity_error()  # generate() warns about defaults it fills in
        self.adapter = AudioLLMAdapter(ModelConfig(path=path, adapter="audio_llm", instruction=instruction))
        self.pair_model = self.adapter.load(path, torch.device(device), dtype).eval()
        self.model = self.pair_model.model
        self.device, self.dtype = torch.device(device), dtype
        self.max_new_tokens = max_new_tokens
        gen_eos = self.model.generation_config.eos_token_id
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
        self.eos_ids = list(dict.fromkeys([self.adapter.eos, *gen_eos]))  # the end of turn first

    def encoder_fingerprint(self) -> str:
        return _fingerprint(self.adapter.family.tower(self.model), f"audio_llm:{self.adapter.family.model_type}")

    @torch.no_grad()
    def encode(self, wavs: list[np.ndarray]) -> torch.Tensor:
        """Tower states [N, T, D + 1] for a batch of 16 kHz waveforms (last channel: valid-frame marks)."""
        prepared = [self.adapter.prepare(w) for w in wavs]
        return self._encode(torch.stack([f for f, _ in prepared]), torch.tensor([n for _, n in prepared]))

    @torch.no_grad()
    def encode_files(self, paths: list, wheres: list[str | None]) -> torch.Tensor:
        """`encode` for audio files, from the adapter's feature store (computed there first if missing;
        errors name `wheres`; audio longer than the window is refused as in training)."""
        return self._encode(*self.adapter.batch_features([self.adapter.stored(str(p), w or "")
                                                          for p, w in zip(paths, wheres)]))

    def _encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Tower states plus valid-frame marks for features [N, mels, frames] of `lengths` valid frames
        (host tensors)."""
        tokens = torch.tensor([self.adapter.family.num_tokens(n) for n in lengths.tolist()], device=self.device)
        states = self.pair_model.tower_states(feats.to(self.device, self.dtype), lengths.to(self.device))
        valid = torch.arange(states.shape[1], device=self.device)[None, :] < tokens[:, None]
        return torch.cat([states, valid[..., None].to(states.dtype)], dim=-1)

    @torch.no_grad()
    def transcribe(self, wavs: list[np.ndarray] | None = None, *, states: torch.Tensor | None = None, n: int = 1,
                   num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                   top_k: int = 0) -> list[list[str]]:
        """n transcripts per input (greedy for n=1, the beam's n best, or n samples), all inputs at
        once, from waveforms or from `encode`'s states."""
        if states is None:
            states = self.encode(wavs)
        weights = next(self.model.parameters()).dtype
        states = states.to(self.device, weights)
        counts = (states[..., -1] > 0.5).sum(1).tolist()
        audio = self.pair_model.audio_embeddings(states[..., :-1])  # [N, T, H]
        prompts = [self.adapter.prompt_ids(c) for c in counts]
        width, frames, start = max(len(p) for p in prompts), states.shape[1], len(self.adapter.prefix)
        ids = torch.full((len(prompts), width), self.adapter.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        gather = torch.zeros_like(ids)
        for i, (p, c) in enumerate(zip(prompts, counts)):  # left padded: every prompt ends where generation starts
            off = width - len(p)
            ids[i, off:], attn[i, off:] = torch.tensor(p), 1
            mask[i, off + start:off + start + c] = True
            gather[i, off + start:off + start + c] = i * frames + torch.arange(c)
        ids, attn, mask, gather = (t.to(self.device) for t in (ids, attn, mask, gather))
        embeds = splice(self.model.get_input_embeddings()(ids), audio, mask, gather)
        kwargs = {"max_new_tokens": self.max_new_tokens, "num_return_sequences": n, "eos_token_id": self.eos_ids,
                  "pad_token_id": self.adapter.pad_id}
        if do_sample:
            kwargs.update(do_sample=True, num_beams=1, temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            kwargs.update(do_sample=False, num_beams=max(num_beams, n))
        out = self.model.generate(inputs_embeds=embeds, attention_mask=attn, **kwargs)  # new tokens only
        texts = self.adapter.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [[t.strip() for t in texts[i * n:(i + 1) * n]] for i in range(len(prompts))]
