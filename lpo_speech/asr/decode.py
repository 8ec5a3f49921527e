"""Decoding a speech-seq2seq model: greedy, beam N-best and sampled transcripts, batched.

Loads through the Whisper adapter so features are computed exactly as in training."""

from __future__ import annotations

import numpy as np
import torch

from lpo_speech.adapters.whisper import WhisperAdapter
from lpo_speech.config import ModelConfig


class AsrDecoder:
    def __init__(self, path: str, device: str | torch.device = "cpu", *, language: str | None = None,
                 task: str | None = None, max_new_tokens: int = 128):
        self.adapter = WhisperAdapter(ModelConfig(path=path, adapter="whisper", language=language, task=task))
        self.model = self.adapter.load(path, torch.device(device)).model.eval()
        self.device = torch.device(device)
        self.language, self.task = language, task
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def transcribe(self, wavs: list[np.ndarray], *, n: int = 1, num_beams: int = 1, do_sample: bool = False,
                   temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0) -> list[list[str]]:
        """n transcripts per input: greedy (n=1), the beam's n best, or n samples; all inputs at once."""
        feats = self.adapter.extract(list(wavs)).to(self.device)
        kwargs = dict(max_new_tokens=self.max_new_tokens, num_return_sequences=n)
        if do_sample:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k or None)
        else:
            kwargs.update(do_sample=False, num_beams=max(num_beams, n))
        if self.language or self.task:
            kwargs.update(language=self.language, task=self.task)
        out = self.model.generate(input_features=feats, **kwargs)
        texts = self.adapter.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [[t.strip() for t in texts[i * n:(i + 1) * n]] for i in range(len(wavs))]
