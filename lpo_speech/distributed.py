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

One line from a multi-process failure: a process that fails tells the others through the launcher's
rendezvous store (a `TCPStore` client of MASTER_ADDR:MASTER_PORT, key `lpo_speech/failed`; the first
failure wins). A watcher thread in every process polls that key: rank 0 prints the failed rank's line
and every process exits with status 2 within a second, even one blocked in a collective that would
otherwise wait for the dead rank until the process group's timeout. The failing process waits (a
few seconds at most) for rank 0 to have shown its line before it exits, because the launcher stops
every process as soon as one exits.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
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
        _watch_failures(rank)
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


# ------------------------------------------------------------------------------------------ failures

_FAILED, _SHOWN, _STOPPING = "lpo_speech/failed", "lpo_speech/shown", "lpo_speech/stopping"
_SHOW_WAIT_S = 5.0  # how long a failed process waits for rank 0 to show its line
_STOP_WAIT_S = 3.0  # how long a stopping process waits for the others to stop with it
_lock = threading.Lock()
_state: dict[str, Any] = {"store": None, "reported": False, "elsewhere": False}
_abort_hooks: list = []


def _failure_store():
    """A client of the launcher's store (None when not launched as a process group)."""
    if _state["store"] is None:
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not addr or not port:
            return None
        from datetime import timedelta

        try:
            _state["store"] = dist.TCPStore(addr, int(port), is_master=False, timeout=timedelta(seconds=10),
                                            wait_for_workers=False)
        except Exception:  # no store to reach: failures then end as the launcher ends them
            _state["store"] = False
    return _state["store"] or None


def on_abort(hook) -> None:
    """Run `hook()` (say, removing what a failed run created) before this process is stopped because
    another process failed."""
    _abort_hooks.append(hook)


def failed_elsewhere() -> bool:
    """Is this process stopping because another one failed? (Its own errors are then echoes: a
    collective that lost its peer.)"""
    return _state["elsewhere"]


def _wait_for(store, done, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if done(store):
                return
        except Exception:
            return  # the store is gone: the launcher is ending the run
        time.sleep(0.05)


def _stop_together(store) -> None:
    """Count this process as stopping and wait (briefly) until every process is: the first to exit
    would break the others' collectives, whose errors would then print as tracebacks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        store.add(_STOPPING, 1)
    except Exception:
        return
    _wait_for(store, lambda st: st.add(_STOPPING, 0) >= world, _STOP_WAIT_S)


def report_failure(line: str) -> None:
    """This process failed with the one line `line` (`error: ...`). Rank 0 prints it; another rank hands
    it to rank 0, which prints it naming the rank (if rank 0 cannot within a few seconds, this process
    prints it itself). The first failure is the one shown; every process then stops with status 2."""
    rank = int(os.environ.get("RANK", "0"))
    store = _failure_store()
    if store is None:  # one process (or no launcher's store): nobody else to tell
        if rank == 0:
            print(line, file=sys.stderr, flush=True)
        return
    with _lock:
        if _state["reported"]:  # another process's failure is being shown; ours is its echo
            return
        _state["reported"] = True
    named = line if rank == 0 else line.replace("error: ", f"error: rank {rank}: ", 1)
    try:
        first = store.compare_set(_FAILED, "", f"{rank}\t{named}").decode() == f"{rank}\t{named}"
    except Exception:
        first = False
    if rank == 0:
        _show(line, store)
    elif first:
        _wait_for(store, lambda st: st.check([_SHOWN]), _SHOW_WAIT_S)
        if not _shown(store):  # rank 0 is gone or stuck: say it here rather than not at all
            print(named, file=sys.stderr, flush=True)
    _stop_together(store)


def _shown(store) -> bool:
    try:
        return store.check([_SHOWN])
    except Exception:
        return False


def _show(line: str, store) -> None:
    print(line, file=sys.stderr, flush=True)
    try:
        store.set(_SHOWN, "1")
    except Exception:
        pass


_stop = threading.Event()


def _stop_watching(thread: threading.Thread) -> None:
    """At exit: end the watcher before the interpreter tears down the store it polls (a C++ object in use
    by another thread at teardown aborts the process: "terminate called without an active exception")."""
    _stop.set()
    thread.join(timeout=5)
    _state["store"] = None


def _watch_failures(rank: int) -> None:
    store = _failure_store()
    if store is None or any(t.name == "lpo-speech-failures" and t.is_alive() for t in threading.enumerate()):
        return

    def watch() -> None:
        while not _stop.wait(0.2):
            try:
                if not store.check([_FAILED]):
                    continue
                who, _, line = store.get(_FAILED).decode().partition("\t")
            except Exception:  # the store is gone: the launcher is ending the run
                return
            with _lock:
                if _state["reported"] or int(who) == rank:
                    return  # this process is reporting its own failure
                _state["reported"] = _state["elsewhere"] = True
            for hook in _abort_hooks:
                try:
                    hook()
                except Exception:
                    pass
            if rank == 0:
                _show(line, store)
            else:
                _wait_for(store, lambda st: st.check([_SHOWN]), _SHOW_WAIT_S)
            _stop_together(store)
            os._exit(2)

    import atexit

    thread = threading.Thread(target=watch, name="lpo-speech-failures", daemon=True)
    thread.start()
    atexit.register(_stop_watching, thread)
