"""Causal LM over token ids: what a codec-token TTS model is (text/control tokens in the prompt,
codec tokens in the response).

Chosen and rejected rows go through the transformer body in one batch; only response positions are
projected to the vocabulary, in chunks (lpo_speech.logps), so no [B, L, V] float32 tensor exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lpo_speech.adapters.base import PairModel, SeqLogps, pad_rows, response_logps
from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair


def load_pretrained(cls: Any, path: str, **kwargs: Any) -> Any:
    """from_pretrained with one clear line when the path is neither a local model nor reachable."""
    from transformers.utils import logging

    logging.disable_progress_bar()  # our own bars show progress; weight loading is quick
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as e:
        hint = "" if Path(path).exists() else " (not a local directory; hub ids need network access)"
        raise UserError(f"cannot load model from {path!r}{hint}: {str(e).splitlines()[0]}") from None


class CausalLMPairModel(PairModel):
    def __init__(self, lm: nn.Module, *, average: bool, num_codebooks: int, codebook_reduction: str):
        super().__init__()
        self.lm = lm
        self.average = average
        self.num_codebooks = num_codebooks
        self.codebook_reduction = codebook_reduction

    def forward(self, batch: dict[str, torch.Tensor]) -> SeqLogps:
        ids = batch["input_ids"]
        hidden = self.lm.get_decoder()(input_ids=ids, attention_mask=batch["attention_mask"]).last_hidden_state
        return response_logps(hidden, ids, batch["response_mask"], self.lm.get_output_embeddings(),
                              average=self.average, num_codebooks=self.num_codebooks,
                              codebook_reduction=self.codebook_reduction, response_pos=batch["response_pos"])


class CausalLMAdapter:
    """Pairs with `prompt_tokens`, `chosen_tokens`, `rejected_tokens` (ids include any BOS/EOS)."""

    def __init__(self, model_cfg, *, average: bool = True):
        self.cfg = model_cfg
        self.average = average
        self.pad_id = 0

    def load(self, path: str, device: torch.device) -> CausalLMPairModel:
        from transformers import AutoModelForCausalLM

        lm = load_pretrained(AutoModelForCausalLM, path, dtype=torch.float32)
        self.vocab_size = lm.get_output_embeddings().weight.shape[0]
        self.pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
        if self.cfg.gradient_checkpointing:
            lm.gradient_checkpointing_enable()
        return CausalLMPairModel(lm, average=self.average, num_codebooks=self.cfg.num_codebooks,
                                 codebook_reduction=self.cfg.codebook_reduction).to(device)

    def encode(self, pair: PreferencePair, where: str, base_dir: Path | None = None) -> dict[str, Any]:
        if pair.chosen_tokens is None or pair.prompt_tokens is None:
            raise UserError("causal_lm pairs need 'prompt_tokens', 'chosen_tokens', 'rejected_tokens'", where=where)
        vocab = getattr(self, "vocab_size", None)
        for name in ("prompt_tokens", "chosen_tokens", "rejected_tokens"):
            toks = getattr(pair, name) or []
            bad = [t for t in toks if t < 0 or (vocab is not None and t >= vocab)]
            if bad:
                raise UserError(f"field '{name}': token id {bad[0]} outside the model's vocabulary [0, {vocab})",
                                where=where)
        rejected = pair.rejected_tokens if pair.rejected_tokens is not None else pair.chosen_tokens  # SFT example
        return {"prompt": pair.prompt_tokens, "chosen": pair.chosen_tokens, "rejected": rejected}

    def length(self, item: dict[str, Any]) -> int:
        return len(item["prompt"]) + max(len(item["chosen"]), len(item["rejected"]))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [(it["prompt"], it["chosen"]) for it in items] + [(it["prompt"], it["rejected"]) for it in items]
        return pad_rows(rows, self.pad_id)

    def save(self, model: CausalLMPairModel, out_dir: Path) -> None:
        model.lm.save_pretrained(out_dir)
