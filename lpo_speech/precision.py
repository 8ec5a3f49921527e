"""Weight and compute dtypes, decided in one place.

`model.dtype` is the dtype the weights are loaded and kept in (`torch_dtype` at load): `float32`,
`bfloat16`, or `auto` (bfloat16 on a GPU that supports it, float32 otherwise). Sampling, scoring,
evaluation and reference log-probs run the weights in that dtype. Training keeps the weights it
updates in `train.master_dtype` (float32 by default: the optimizer's master copy, since AdamW steps of
lr ~1e-7 are far below bfloat16's resolution and would round away) and, whenever `model.dtype` is
bfloat16, computes under bfloat16 autocast (matmuls in bf16, reductions in fp32). Frozen weights (a
frozen encoder, the base of a LoRA model) stay in `model.dtype`.

FSDP without LoRA computes differently: it gathers a bfloat16 copy of every weight for each block
(MixedPrecisionPolicy), so activations between matmuls (embeddings, norms, the residual stream) are
bfloat16 too, where DDP keeps them in float32. `compute_tag` names the path a run's forward takes;
reference log-probs are computed on the path training will use (lpo_speech.reflogps, and the live
reference in lpo_speech.policy), so the chosen log-ratio x1 is 0 at step 0, and the pair file records
the tag so a run on another path stops in one line.
"""

from __future__ import annotations

import contextlib

import torch

from lpo_speech.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def compute_tag(dtype: torch.dtype, *, strategy: str, lora: bool) -> str:
    """The numerics of a training forward: `float32`; `bfloat16` (bf16 autocast over the fp32 master
    copy of trained weights and bf16 frozen ones: DDP, and FSDP with LoRA, whose blocks mix dtypes and
    are gathered as stored); `bfloat16-weights` (FSDP's bf16 copies of every weight, autocast on top)."""
    if dtype == torch.float32:
        return "float32"
    return "bfloat16-weights" if strategy == "fsdp" and not lora else dtype_name(dtype)


def bf16_supported(device: torch.device) -> bool:
    """Whether this device computes in bfloat16 natively (CUDA: Ampere or newer) or at all (CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        a = torch.ones(4, 4, dtype=torch.bfloat16, device=device)
        return bool(torch.isfinite((a @ a).float()).all())
    except RuntimeError:
        return False


def resolve_dtype(requested: str, device: torch.device, *, where: str = "model.dtype") -> torch.dtype:
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" and bf16_supported(device) else torch.float32
    if requested not in DTYPES:
        raise UserError(f"{requested!r}: expected auto, float32 or bfloat16", where=where)
    if DTYPES[requested] == torch.bfloat16 and not bf16_supported(device):
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "this CPU"
        raise UserError(f"bfloat16 is not supported on {device} ({name}): use float32", where=where)
    return DTYPES[requested]


def autocast(device: torch.device, dtype: torch.dtype):
    """bfloat16 autocast when the compute dtype is bfloat16, else nothing."""
    if dtype == torch.bfloat16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
