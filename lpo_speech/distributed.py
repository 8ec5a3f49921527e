"""Where each process runs, and torch.distributed glue for runs started by `torchrun` or `accelerate
launch` (never a home-made launcher).

The placement rule, the one place it is decided (`resolve_device`): a stage asked for `auto` runs on
`cuda:LOCAL_RANK` when CUDA is present and on the CPU otherwise; `cuda` insists on the GPU (one line
when there is none, or fewer GPUs than local ranks); `cpu` stays on the CPU; `cuda:N` names one GPU
(for a judge that must sit on another card). LOCAL_RANK comes from the launcher's environment, so
under `torchrun --nproc_per_node 8` rank r of a node takes GPU r. Nothing else in the package picks a
device: stages call `init_distributed(recipe.runtime.device)` and use `info.device`.

Training uses DDP or FSDP2 (lpo_speech.parallel); stages that sample or score shard their items
across ranks (lpo_speech.stages). With CUDA the process group gets NCCL for GPU tensors and gloo for
CPU ones ("cpu:gloo,cuda:nccl"), so CPU-side collectives (barriers around file writes, gathering
device names) work next to NCCL.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import torch
import torch.distributed as dist

from lpo_speech.errors import UserError

T = TypeVar("T")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def valid_device(text: str | None) -> bool:
    """auto, cpu, cuda or cuda:N (what recipes and --device accept)."""
    if text is None:
        return False
    if text in DEVICE_CHOICES:
        return True
    kind, _, index = text.partition(":")
    return kind == "cuda" and index.isdigit()


def resolve_device(requested: str = "auto", *, env: Mapping[str, str] | None = None,
                   cuda_count: int | None = None, where: str = "runtime.device") -> torch.device:
    """The placement rule (module docstring) as a pure function of the request, the launcher's
    LOCAL_RANK (`env`, default os.environ) and the number of visible GPUs (default: asked of torch)."""
    env = os.environ if env is None else env
    if not valid_device(requested):
        raise UserError(f"{requested!r}: expected auto, cpu, cuda or cuda:N", where=where)
    if requested == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if requested.startswith("cuda:"):
        index = int(requested.partition(":")[2])
        if index >= count:
            raise UserError(f"{requested}: only {count} CUDA device(s) visible", where=where)
        return torch.device(requested)
    if count == 0:
        if requested == "cuda":
            raise UserError("cuda: no CUDA device is visible (use auto or cpu)", where=where)
        return torch.device("cpu")
    local_rank = int(env.get("LOCAL_RANK", "0"))
    if local_rank >= count:
        raise UserError(f"LOCAL_RANK {local_rank} but only {count} CUDA device(s) visible: launch at most "
                        f"{count} processes per node", where=where)
    return torch.device(f"cuda:{local_rank}")


def init_distributed(device: str = "auto", *, where: str = "runtime.device") -> DistInfo:
    """Join the process group if launched with WORLD_SIZE > 1 (once per process); this process's
    device by the placement rule (`where` names the setting in errors)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, where=where)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def record_runtime(stage: str, info: DistInfo, folder: str | Path | None = None, *, quiet: bool = False,
                   **details: Any) -> dict:
    """Say what runs where: every rank's device (gathered), plus `details` (dtype, strategy, judge
    device, ...). Rank 0 prints one line and, given a `folder`, writes `<folder>/runtime.json`. Call on
    every rank (it gathers)."""
    mine = describe_device(info.device)
    devices = [mine]
    if dist.is_initialized() and info.world > 1:
        devices = [None] * info.world  # type: ignore[list-item]
        dist.all_gather_object(devices, mine)
    record = {"stage": stage, "processes": info.world, "devices": devices, **details,
              "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node()}
    if info.is_main:
        shown = devices[0] if len(set(devices)) == 1 else ", ".join(devices)
        extra = ", ".join(f"{k} {v}" for k, v in details.items() if v is not None)
        if not quiet:
            print(f"{stage}: {info.world} process(es) on {shown}" + (f"; {extra}" if extra else ""), flush=True)
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "runtime.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(value: int, device: torch.device) -> int:
    """The largest `value` over the processes (an int known on the host)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Every world-th item starting at rank: balanced, and the union over ranks is the whole list."""
    return list(items[rank::world])


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
