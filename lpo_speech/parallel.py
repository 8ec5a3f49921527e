"""Data-parallel training on PyTorch's own engines: DDP or FSDP2 (`train.strategy`).

* `ddp`: every process holds the whole model; DistributedDataParallel all-reduces gradients on the
  last micro-step of each global batch. One process needs no wrapper.
* `fsdp`: FSDP2's `fully_shard` on every transformer block, then on the root. The blocks are the
  outermost modules of a class that some transformers model inside names in its `_no_split_modules`
  (as transformers and accelerate name them): each decoder layer of a language model, each encoder
  layer of Whisper or of an audio LLM's tower. A frozen encoder (`model.freeze_encoder`) is left out
  of sharding: every rank keeps it whole, since the adapters run it alone, once per audio, outside
  the pair forward (`frozen_parts`). The number of units and the largest one are logged at start.
  Each rank keeps 1/N of the weights, gradients and optimizer state (in `train.master_dtype`); a
  block's weights are gathered just before its forward and backward, cast to the compute dtype
  (MixedPrecisionPolicy: bf16 params, fp32 gradient reduction), and freed after
  (`train.fsdp_reshard_after_forward`). `train.fsdp_cpu_offload` keeps the shards in host memory.
  A single process without a launcher gets a one-process group, so FSDP's CPU offload also serves
  one GPU.

Checkpoints of a sharded run go through torch.distributed.checkpoint (lpo_speech.checkpoint), which
reshards on load.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from lpo_speech.distributed import DistInfo


def ensure_process_group(info: DistInfo) -> None:
    """FSDP needs a process group even for one process: make a one-member group when none exists."""
    if not dist.is_initialized():
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def frozen_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of each sub-model (a transformers PreTrainedModel) in which nothing trains while
    something else in `model` does: a frozen encoder (`model.freeze_encoder`), whose states the
    adapters compute alone, once per audio, outside the pair forward. LoRA puts no adapter there
    (lpo_speech.lora: it would never get a gradient, which stops DDP) and FSDP leaves it unsharded.
    The outermost such sub-models only; none in a model where nothing trains (a reference copy)."""
    from transformers import PreTrainedModel

    if not any(p.requires_grad for p in model.parameters()):
        return []
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{f}.") for f, _ in found) or not isinstance(module, PreTrainedModel):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append((name, module))
    return found


def fsdp_blocks(pair_model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards as units below the root: the outermost modules of a class named in the
    `_no_split_modules` of any transformers model inside (the top model's list alone may miss the
    language model's decoder layer or the encoder's layer), outside frozen parts."""
    from transformers import PreTrainedModel

    names: set[str] = set()
    for module in pair_model.modules():
        if isinstance(module, PreTrainedModel):
            names.update(module._no_split_modules or ())
    skip = [name for name, _ in frozen_parts(pair_model)]
    blocks: list[tuple[str, nn.Module]] = []
    for name, module in pair_model.named_modules():
        inside = skip + [b for b, _ in blocks]
        if type(module).__name__ in names and not any(name == s or name.startswith(f"{s}.") for s in inside):
            blocks.append((name, module))
    return [module for _, module in blocks]


def _count(params) -> int:
    return sum({id(p): p.numel() for p in params}.values())  # tied weights count once


def fsdp_summary(pair_model: nn.Module) -> dict[str, object]:
    """What FSDP will make of the pair model, for the start-of-run line and runtime.json: the number of
    units (blocks + the root), the largest one's class and parameter count, and what stays whole on
    every rank (a frozen encoder). A model without blocks is refused: FSDP would gather it whole for
    every forward, with no memory saved over DDP."""
    from lpo_speech.errors import UserError

    blocks = fsdp_blocks(pair_model)
    if not blocks:
        hf = getattr(pair_model, "hf_model", pair_model)
        name = type(hf.get_base_model() if hasattr(hf, "get_base_model") else hf).__name__  # not peft's wrapper
        raise UserError(f"{name} names no transformer block class (_no_split_modules) to shard by; "
                        "train it with train.strategy ddp", where="train.strategy")
    frozen = [m for _, m in frozen_parts(pair_model)]
    inside = {id(p) for m in blocks + frozen for p in m.parameters()}
    root = _count(p for p in pair_model.parameters() if id(p) not in inside)
    largest = max(blocks, key=lambda m: _count(m.parameters()))
    size, kind = max((_count(largest.parameters()), type(largest).__name__), (root, "the root"))
    return {"fsdp_units": len(blocks) + 1, "fsdp_largest_unit": f"{kind}, {size:,} params",
            "fsdp_unsharded": (", ".join(f"{type(m).__name__} (frozen), {_count(m.parameters()):,} params"
                                         for m in frozen) or None)}


def shard_fsdp(pair_model: nn.Module, info: DistInfo, cfg, compute_dtype: torch.dtype) -> nn.Module:
    """fully_shard the pair model in place (blocks, then the root; frozen parts stay whole on every
    rank); returns it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard,
                                        register_fsdp_forward_method)

    ensure_process_group(info)
    mesh = init_device_mesh(info.device.type, (dist.get_world_size(),))
    offload = CPUOffloadPolicy() if cfg.fsdp_cpu_offload else OffloadPolicy()
    blocks = fsdp_blocks(pair_model)
    frozen = [m for _, m in frozen_parts(pair_model)]
    # FSDP moves what it shards to the device and leaves ignored parameters where they are: a frozen
    # part goes there whole (buffers too).
    for module in frozen:
        module.to(info.device)
    assigned: set[int] = {id(p) for m in frozen for p in m.parameters()}
    ignored = {p for m in frozen for p in m.parameters()}

    def shard(module: nn.Module, **kw) -> None:
        # A group gathers its weights in the compute dtype when they share one dtype; a group that
        # mixes dtypes (a LoRA block: frozen base in model.dtype, fp32 adapter) is gathered as stored
        # and computes under autocast: FSDP2 cannot cast a mixed group and reduce its gradients in fp32.
        own = [p for p in module.parameters() if id(p) not in assigned]
        assigned.update(id(p) for p in own)
        uniform = len({p.dtype for p in own}) <= 1
        cast = compute_dtype if uniform and compute_dtype != torch.float32 else None
        # cast_forward_inputs off: a batch carries float token counts that bf16 would round.
        mp = MixedPrecisionPolicy(param_dtype=cast, reduce_dtype=torch.float32, cast_forward_inputs=False)
        fully_shard(module, mesh=mesh, mp_policy=mp, offload_policy=offload,
                    reshard_after_forward=cfg.fsdp_reshard_after_forward, **kw)

    if not blocks:
        fsdp_summary(pair_model)  # raises: nothing to shard by
    for module in blocks:
        shard(module)
    shard(pair_model, ignored_params=ignored or None)
    if hasattr(pair_model, "prepare_for_sharding"):
        pair_model.prepare_for_sharding()
    # `call` runs any function inside the root's forward hooks (lpo_speech.parallel.with_full_weights).
    register_fsdp_forward_method(pair_model, "call")
    pair_model.fsdp_reshard_after_forward = cfg.fsdp_reshard_after_forward
    return pair_model


def wrap(pair_model: nn.Module, info: DistInfo, cfg, compute_dtype: torch.dtype) -> nn.Module:
    """The module the training loop calls: the pair model itself (one process, or FSDP, which works in
    place) or its DDP wrapper."""
    if cfg.strategy == "fsdp":
        return shard_fsdp(pair_model, info, cfg, compute_dtype)
    if info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # gradient_as_bucket_view: gradients live in DDP's communication buckets instead of beside them
        # (saves one gradient-sized buffer per process).
        return DDP(pair_model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                   gradient_as_bucket_view=True)
    return pair_model


def gradient_sync(model: nn.Module, sync: bool):
    """Context for one micro-step: gradients are reduced across ranks only when `sync` (the last
    micro-step of a global batch)."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """The global gradient norm (clipped to `max_norm` when > 0), as a plain tensor also under FSDP."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on rank 0's CPU (None on other ranks). Call on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if dist.get_rank() == 0 else None


def with_full_weights(model: nn.Module, fn):
    """`fn()` with every weight of `model` whole on this rank, for code that calls the transformers model
    directly, token by token (sampling during online training), instead of through the pair model's
    forward. A sharded model is gathered once (every FSDP unit unsharded, in the compute dtype),
    kept gathered across the calls inside `fn` (no all-gather per token), and resharded after, so
    the optimizer and the next training forward see the shards again. Collective under FSDP: every
    rank calls it. Other models just run `fn()`."""
    if not is_sharded(model):
        return fn()
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        # Through the root's registered forward method: FSDP's root set-up runs first (it takes the
        # first module to run forward as the root) and the root's own weights (embeddings, head) are
        # gathered; each block's weights are gathered by its own hook at its first call.
        with torch.no_grad():
            return model.call(fn)
    finally:
        for m in units:
            m.reshard()
            # the root keeps its weights between forward and backward, as FSDP's default does
            m.set_reshard_after_forward(m is not model and model.fsdp_reshard_after_forward, recurse=False)
