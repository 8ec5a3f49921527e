"""The policy as training sees it, loaded the same way by the trainer and the ref-logps stage.

Load the weights in `model.dtype` (lpo_speech.precision), wrap them with LoRA when the recipe asks
(lpo_speech.lora), then keep every weight that trains in `train.master_dtype` (fp32 by default) while
frozen ones stay in `model.dtype`. Forward passes run under bf16 autocast when `model.dtype` is
bfloat16. ref-logps goes through this same function, so the stored reference log-probs are the
policy's own at step 0, computed the same way, and the pair file can record their dtype.
"""

from __future__ import annotations

import torch

from pathlib import Path

from lpo_speech.adapters.base import PairModel
from lpo_speech.lora import apply_lora, fold_adapter
from lpo_speech.precision import DTYPES, compute_tag, resolve_dtype


def load_policy(recipe, adapter, device: torch.device, *, load_device: torch.device | None = None
                ) -> tuple[PairModel, torch.dtype]:
    """(pair model, compute dtype). `load_device` (default `device`) is where the weights land: the CPU
    for FSDP, which then moves each rank's shard to `device`."""
    dtype = resolve_dtype(recipe.model.dtype, device)
    pair_model = adapter.load(recipe.model.path, load_device or device, dtype)
    if recipe.model.lora is not None:
        apply_lora(pair_model, recipe.model.lora, recipe.model.path)
    master = DTYPES[recipe.train.master_dtype]
    for p in pair_model.parameters():
        if p.requires_grad and p.dtype != master:
            p.data = p.data.to(master)
    return pair_model, dtype


def load_reference(recipe, adapter, device: torch.device, *, load_device: torch.device | None = None
                   ) -> PairModel:
    """A frozen copy for `reference.source: model` (not used with LoRA: there the policy with its
    adapter disabled is the reference), in `model.dtype`; it computes as the policy does at step 0
    (lpo_speech.precision.compute_tag): under DDP with bf16 autocast the weights the policy trains are
    its fp32 master copy, so the reference holds those in `train.master_dtype` too."""
    dtype = resolve_dtype(recipe.model.dtype, device)
    ref = adapter.load(recipe.reference.path or recipe.model.path, load_device or device, dtype).eval()
    if compute_tag(dtype, strategy=recipe.train.strategy, lora=False) == "bfloat16":
        master = DTYPES[recipe.train.master_dtype]
        for p in ref.parameters():
            if p.requires_grad:  # what the policy trains (a frozen encoder stays in model.dtype)
                p.data = p.data.to(master)
    ref.requires_grad_(False)
    return ref


def save_trained(pair_model: PairModel, adapter, run_dir: Path, lora, dtype: torch.dtype) -> None:
    """Write `run_dir/model` in `model.dtype` (the weights as they were loaded; the fp32 master copy
    rounds to it) and, for LoRA, the adapter per `model.lora.save` (lpo_speech.lora)."""
    pair_model.to(dtype)
    if lora is not None and lora.save in ("adapter", "both"):
        adapter.save(pair_model, run_dir / ("model" if lora.save == "adapter" else "adapter"))
    if lora is not None and lora.save == "adapter":
        return
    if lora is not None:
        fold_adapter(pair_model)
    adapter.save(pair_model, run_dir / "model")


def disable_dropout(model: torch.nn.Module) -> None:
    # Policy and reference log-probs must be comparable: no dropout noise (as TRL does by default).
    # LoRA's own dropout (peft's `lora_dropout` modules) stays as the recipe sets it: it acts only on
    # the adapter's path, which the reference does not have.
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Dropout) and ".lora_dropout." not in f".{name}.":
            m.p = 0.0
