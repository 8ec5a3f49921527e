"""Model adapters: how a track's model turns a batch of preference pairs into sequence log-probs.

An adapter exposes a `PairModel` (an `nn.Module` whose forward returns `SeqLogps` for chosen and
rejected in one pass, so DDP wraps one forward per step) and the track-specific encoding of pair
records into tensors. The trainer knows nothing else about the model.
"""

from __future__ import annotations

import importlib

from lpo_speech.adapters.base import Adapter, PairModel, SeqLogps

__all__ = ["Adapter", "PairModel", "SeqLogps", "adapter_for_model", "load_adapter"]


def load_adapter(model_cfg) -> Adapter:
    from lpo_speech.recipe import ADAPTERS

    module, _, name = ADAPTERS[model_cfg.adapter].partition(":")
    return getattr(importlib.import_module(module), name)(model_cfg)


def adapter_for_model(path: str) -> Adapter:
    """The adapter that reads the model at `path`, from its config's model type (speech seq2seq:
    whisper; anything else: causal_lm)."""
    from transformers import AutoConfig

    from lpo_speech.adapters.causal_lm import load_pretrained
    from lpo_speech.recipe import ModelConfig

    model_type = load_pretrained(AutoConfig, path).model_type
    return load_adapter(ModelConfig(path=path, adapter="whisper" if model_type == "whisper" else "causal_lm"))
