"""Causal LM over token ids: what a codec-token TTS model is (text/control tokens in the prompt,
codec tokens in the response).

Chosen and rejected rows go through the transformer body in one batch; only response positions are
projected to the vocabulary, in chunks (lpo_speech.logps), so no [B, L, V] float32 tensor exists.
The collate also prepares, on the host, which flattened positions to project, their targets and
sequences, and the per-sequence row offsets (kept on the host: `HostInts`), so the forward selects
rows with index_select and never reads a device value (no host-device sync on GPU); the sequence
log-probs come from `linear_sequence_logps` (gradients formed in forward, see lpo_speech.logps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lpo_speech.adapters.base import (HostInts, PairModel, SeqLogps, enable_checkpointing, pad_rows,
                                      pair_rows, response_logps, split_pairs)
from lpo_speech.errors import UserError
from lpo_speech.logps import linear_sequence_logps
from lpo_speech.records import PreferencePair


# ValueErrors / RuntimeErrors of from_pretrained that mean "this folder is no loadable model" (a
# missing or unknown model_type, a config of another model family, weights of other shapes).
_BAD_MODEL = ("Unrecognized model", "Unrecognized configuration class", "The checkpoint you are trying to load has model type",
              "ignore_mismatched_sizes", "Error(s) in loading state_dict")


def load_pretrained(cls: Any, path: str, **kwargs: Any) -> Any:
    """from_pretrained with one clear line (`UserError` naming the path) when the path is neither a
    loadable local model nor reachable: a missing or malformed `config.json`, a truncated or damaged
    weights file, weights that do not fit the config, a hub id without network access. A path that
    exists is never looked up on the hub: a file (no model folder) is one line at once."""
    import json

    from safetensors import SafetensorError
    from transformers.utils import logging

    from lpo_speech.hub import file_not_folder

    if file_not_folder(path):  # transformers would take a relative `dir/file` for a hub id and retry
        raise UserError("cannot load model: a file, not a model folder (save_pretrained writes a folder)",
                        where=str(path))

    logging.disable_progress_bar()  # our own bars show progress; weight loading is quick
    try:
        return cls.from_pretrained(path, **kwargs)
    except (OSError, SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as e:
        reason = _first_line(e)
        if isinstance(e, SafetensorError):
            reason = f"damaged or truncated safetensors weights ({reason})"
    except (ValueError, RuntimeError) as e:
        if not any(m in str(e) for m in _BAD_MODEL):
            raise  # a bug, not a bad model folder: keep its traceback
        reason = _first_line(e)
        if reason.startswith("Unrecognized model") and Path(path).is_dir() and not (Path(path) / "config.json").is_file():
            reason = "no config.json in this folder (a model saved with save_pretrained has one)"
    except Exception as e:  # huggingface_hub's strict config validation (a config.json value of a wrong type)
        if type(e).__name__ not in ("StrictDataclassFieldValidationError", "StrictDataclassClassValidationError"):
            raise
        reason = "config.json: " + " ".join(str(e).split())
    hint = "" if Path(path).exists() else " (not a local directory; hub ids need network access)"
    reason = reason if len(reason) <= 240 else reason[:240] + "... (truncated)"
    raise UserError(f"cannot load model{hint}: {reason}", where=str(path)) from None


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def copy_tokenizer(src: str | Path, dst: str | Path) -> bool:
    """Save the text tokenizer of model folder `src`, if it has one, into `dst`. A hub-layout codec LM
    (lpo_speech.tts.text, "Hub layout") encodes its prompts with it, so a trained or exported copy
    without it could not synthesize; lpo-layout models have none and need none."""
    if not (Path(src) / "tokenizer_config.json").is_file():
        return False
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))
    return True


class CausalLMPairModel(PairModel):
    hf_attr = "lm"

    def __init__(self, lm: nn.Module, *, average: bool, num_codebooks: int, codebook_reduction: str,
                 codebook_levels: tuple[int, ...] | None = None):
        super().__init__()
        self.lm = lm
        self.average = average
        self.num_codebooks = num_codebooks
        self.codebook_reduction = codebook_reduction
        self.codebook_levels = codebook_levels

    def forward(self, batch: dict[str, torch.Tensor]) -> SeqLogps:
        ids = batch["input_ids"]
        pairs = batch["num_pairs"].values[0] if "num_pairs" in batch else ids.shape[0] // 2
        # use_cache off: a training forward needs no KV cache, and building one keeps every layer's K and V
        # alive until the decoder returns.
        hidden = self.lm.get_decoder()(input_ids=ids, attention_mask=batch["attention_mask"],
                                       use_cache=False).last_hidden_state
        head = self.lm.get_output_embeddings()
        # "first" sums slot 0 only and "level" averages per level: both need each token's slot.
        by_slot = self.codebook_reduction in ("first", "level") and self.num_codebooks > 1
        if by_slot or "logp_index" not in batch:  # token-level path (masks; reduce_sequences)
            return response_logps(hidden, ids, batch["response_mask"], head, average=self.average,
                                  num_codebooks=self.num_codebooks, codebook_reduction=self.codebook_reduction,
                                  response_pos=batch["response_pos"], num_pairs=pairs,
                                  slot_levels=self.codebook_levels)
        rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["logp_index"])
        sums = linear_sequence_logps(rows, head.weight, batch["logp_targets"], batch["logp_seq"],
                                     batch["logp_offsets"].values, getattr(head, "bias", None))
        n = batch["response_tokens"]  # float [2B]: scored tokens per row
        frames = n / self.num_codebooks if self.codebook_reduction == "sum" and self.num_codebooks > 1 else n
        logps = sums / frames.clamp(min=1) if self.average else sums
        return split_pairs(logps, sums / n.clamp(min=1), pairs)


def logp_rows(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Host-side selection of the scored positions of a right-padded batch (pad_rows layout).

    Position t of row i predicts token t+1, so it is scored when t+1 is a response token. Returns the
    flattened positions (row-major, so grouped by row), their targets, their row, the row offsets
    (HostInts) and the number of scored tokens per row (float)."""
    ids, resp = batch["input_ids"], batch["response_mask"]
    sel = torch.zeros_like(resp)
    sel[:, :-1] = resp[:, 1:]
    index = sel.reshape(-1).nonzero().squeeze(1)
    width = ids.shape[1]
    counts = sel.sum(1)
    return {"logp_index": index, "logp_targets": ids.reshape(-1)[index + 1],
            "logp_seq": index // width, "logp_offsets": HostInts([0] + counts.cumsum(0).tolist()),
            "response_tokens": counts.float()}


class CausalLMAdapter:
    """Pairs with `prompt_tokens`, `chosen_tokens`, `rejected_tokens` (ids include any BOS/EOS)."""

    def __init__(self, model_cfg, *, average: bool = True):
        self.cfg = model_cfg
        self.average = average
        self.chosen_only = False  # the trainer sets it for loss.type sft
        self.pad_id = 0

    def load(self, path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> CausalLMPairModel:
        from transformers import AutoModelForCausalLM

        lm = load_pretrained(AutoModelForCausalLM, path, dtype=dtype)
        self.vocab_size = lm.get_output_embeddings().weight.shape[0]
        self.pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
        if self.cfg.codebook_reduction != "flat" and (getattr(lm.config, "tts", None) or {}).get("phoneme_sync"):
            raise UserError("a phoneme-synchronous TTS model writes symbols between its frames, so a "
                            "response position is no codec slot: use codebook_reduction flat",
                            where="model.codebook_reduction")
        if self.cfg.gradient_checkpointing:
            enable_checkpointing(lm)
        return CausalLMPairModel(lm, average=self.average, num_codebooks=self.cfg.num_codebooks,
                                 codebook_reduction=self.cfg.codebook_reduction,
                                 codebook_levels=tuple(self.cfg.codebook_levels or ()) or None).to(device)

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
        batch = pad_rows(pair_rows(items, self.chosen_only), self.pad_id)
        return {**batch, **logp_rows(batch), "num_pairs": HostInts([len(items)])}

    def save(self, model: CausalLMPairModel, out_dir: Path) -> None:
        model.lm.save_pretrained(out_dir)
        copy_tokenizer(model.lm.name_or_path, out_dir)  # the folder the policy was loaded from
