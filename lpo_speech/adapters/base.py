"""The small typed interface between the shared trainer and a track's model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from lpo_speech.records import PreferencePair


@dataclass
class SeqLogps:
    """Per-pair outputs of one forward over chosen and rejected (all shape [B], float32)."""

    chosen: torch.Tensor  # sequence log-prob of the chosen response (summed or averaged)
    rejected: torch.Tensor
    chosen_nll: torch.Tensor  # per-token mean negative log-likelihood of the chosen response


class PairModel(nn.Module):
    """Wraps a model; `forward(batch)` returns `SeqLogps` for chosen and rejected in one pass."""

    def forward(self, batch: dict[str, torch.Tensor]) -> SeqLogps:  # pragma: no cover - interface
        raise NotImplementedError


class Adapter(Protocol):
    def load(self, path: str, device: torch.device) -> PairModel:
        """Load the model at `path` (local dir or hub id) wrapped as a PairModel on `device`."""

    def encode(self, pair: PreferencePair, where: str) -> dict[str, Any]:
        """Turn one pair record into model inputs (token ids, audio features); errors name `where`."""

    def length(self, item: dict[str, Any]) -> int:
        """Length used for bucketing and the max_length filter."""

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad a list of encoded items into one batch (chosen rows first, then rejected)."""

    def save(self, model: PairModel, out_dir: Path) -> None:
        """Save the trained model so `load(out_dir)` and the track's tools can read it."""
