"""The small typed interface between the shared trainer and a track's model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from lpo_speech.logps import linear_token_logps, reduce_sequences
from lpo_speech.records import PreferencePair


@dataclass
class SeqLogps:
    """Per-pair outputs of one forward over chosen and rejected (all shape [B], float32)."""

    chosen: torch.Tensor  # sequence log-prob of the chosen response (summed or averaged)
    rejected: torch.Tensor
    chosen_nll: torch.Tensor  # per-token mean negative log-likelihood of the chosen response


class HostInts:
    """Integers a batch carries for the host (chunk loop bounds, the pair count): moving the batch to a
    device (`.to(device)`, DDP's input move) leaves them where they are, so reading them never syncs."""

    def __init__(self, values):
        self.values = tuple(int(v) for v in values)

    def to(self, *args, **kwargs) -> "HostInts":
        return self

    def __repr__(self) -> str:
        return f"HostInts({list(self.values)})"


def pair_rows(items: list[dict[str, Any]], chosen_only: bool) -> list[tuple[list[int], list[int]]]:
    """(prompt, response) rows of a batch: the chosen rows, then the rejected rows. With
    `chosen_only` (SFT: no preference term) the rejected rows are left out, halving the work."""
    rows = [(it["prompt"], it["chosen"]) for it in items]
    return rows if chosen_only else rows + [(it["prompt"], it["rejected"]) for it in items]


def split_pairs(logps: torch.Tensor, mean_logp: torch.Tensor, num_pairs: int) -> SeqLogps:
    """SeqLogps from per-row values (chosen rows first); a chosen-only batch reports the chosen
    log-probs for both sides (the SFT loss reads only `chosen_nll`)."""
    b = num_pairs
    rejected = logps[b:] if logps.shape[0] == 2 * b else logps[:b]
    # Copies, not views of one tensor: FSDP2 hooks the module's outputs for backward, and a view would
    # let an in-place op downstream skip that hook (it warns); [B] floats cost nothing to copy.
    return SeqLogps(chosen=logps[:b].clone(), rejected=rejected.clone(), chosen_nll=-mean_logp[:b])


def enable_checkpointing(model: nn.Module) -> None:
    """Activation (gradient) checkpointing on a transformers model: recompute each block in backward.
    transformers renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable` (the old
    name warns); GPU images with an older transformers have only the old one."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


class PairModel(nn.Module):
    """Wraps a model; `forward(batch)` returns `SeqLogps` for chosen and rejected in one pass.

    `hf_attr` names the attribute holding the transformers model (a peft `PeftModel` around it when
    LoRA is on: lpo_speech.lora), so shared code (LoRA, FSDP, saving) reaches it without knowing the
    track."""

    hf_attr = "model"

    def forward(self, batch: dict[str, torch.Tensor]) -> SeqLogps:  # pragma: no cover - interface
        raise NotImplementedError

    def call(self, fn):
        """`fn()`; under FSDP a registered forward method, so it runs inside the root's forward hooks
        (lpo_speech.parallel.with_full_weights)."""
        return fn()

    @property
    def hf_model(self) -> nn.Module:
        return getattr(self, self.hf_attr)

    def set_hf_model(self, model: nn.Module) -> None:
        # A method, not a property setter: nn.Module.__setattr__ registers any Module value under the
        # name it is assigned to, before a property setter could run.
        setattr(self, self.hf_attr, model)


class Adapter(Protocol):
    def load(self, path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> PairModel:
        """Load the model at `path` (local dir or hub id) with weights in `dtype`, wrapped as a
        PairModel on `device`."""

    def encode(self, pair: PreferencePair, where: str, base_dir: Path) -> dict[str, Any]:
        """Turn one pair record into model inputs (token ids, audio path); errors name `where`;
        relative audio paths are relative to `base_dir` (the pair file's folder)."""

    def length(self, item: dict[str, Any]) -> int:
        """Length used for bucketing and the max_length filter."""

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad a list of encoded items into one batch (chosen rows first, then rejected; chosen rows
        only when the adapter's `chosen_only` is set, as the trainer does for loss.type sft)."""

    def save(self, model: PairModel, out_dir: Path) -> None:
        """Save the trained model so `load(out_dir)` and the track's tools can read it."""


def response_logps(hidden: torch.Tensor, ids: torch.Tensor, response_mask: torch.Tensor, head: nn.Module, *,
                   average: bool, num_codebooks: int = 1, codebook_reduction: str = "flat",
                   response_pos: torch.Tensor | None = None, num_pairs: int | None = None,
                   slot_levels: tuple[int, ...] | None = None) -> SeqLogps:
    """SeqLogps from decoder states [2B, L, H] of rows (chosen..., rejected...) and their ids
    ([B, L, H] of chosen rows only when `num_pairs` says the batch is chosen-only).

    Position t predicts token t+1, so keep (hidden[t], ids[t+1]) where t+1 is a response token; only
    those rows reach the vocabulary projection, chunked (lpo_speech.logps)."""
    sel = response_mask[:, 1:]
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(sel)[sel]
    tok = linear_token_logps(hidden[:, :-1][sel], head.weight, ids[:, 1:][sel], getattr(head, "bias", None))
    slots = response_pos[:, 1:][sel] % num_codebooks if num_codebooks > 1 and response_pos is not None else None
    n = ids.shape[0]
    logps, _ = reduce_sequences(tok, rows, n, average=average, slots=slots, num_codebooks=num_codebooks,
                                codebook_reduction=codebook_reduction, slot_levels=slot_levels)
    mean_logp, _ = reduce_sequences(tok, rows, n, average=True)
    return split_pairs(logps, mean_logp, num_pairs if num_pairs is not None else n // 2)


def pad_rows(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (prompt, response) id lists into input_ids, attention_mask, response_mask and
    response_pos (index within the response, for codebook slots)."""
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    resp = torch.zeros((len(rows), width), dtype=torch.bool)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        attn[i, :n] = 1
        resp[i, len(p):n] = True
        pos[i, len(p):n] = torch.arange(len(r))
    return {"input_ids": ids, "attention_mask": attn, "response_mask": resp, "response_pos": pos}
