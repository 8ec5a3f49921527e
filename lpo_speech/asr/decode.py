"""Decoding a speech-seq2seq model: greedy, beam N-best and sampled transcripts, batched.

Loads through the Whisper adapter so features are computed exactly as in training. The encoder is
most of the cost on CPU (a 30 s window per utterance), so callers may pass encoder states computed
once and shared between models whose encoders are identical (`encoder_fingerprint`), e.g. a base
model and its LPO descendant trained with a frozen encoder.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from lpo_speech.adapters.whisper import WhisperAdapter
from lpo_speech.config import ModelConfig


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
        self.language, self.task = language, task
        self.max_new_tokens = max_new_tokens

    def encoder_fingerprint(self) -> str:
        h = hashlib.sha1()
        for name, p in sorted(self.model.get_encoder().state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().float().numpy().tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def encode(self, wavs: list[np.ndarray]) -> torch.Tensor:
        """Encoder states [N, T, D] for a batch of 16 kHz waveforms."""
        feats = self.adapter.extract(list(wavs)).to(self.device, self.dtype)
        return self.model.get_encoder()(feats).last_hidden_state

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
        out = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), **kwargs)
        texts = self.adapter.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [[t.strip() for t in texts[i * n:(i + 1) * n]] for i in range(states.shape[0])]
