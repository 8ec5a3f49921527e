"""Training checkpoints: the weights that train, optimizer, scheduler and RNG state; no pickle.

Layout: <run>/checkpoints/step-000120/{model.safetensors, optimizer.safetensors, rng-rank<r>.safetensors,
state.json} for DDP and single-process runs (rank 0 writes; every rank its RNG), or {dcp/,
rng-rank<r>.safetensors, state.json} for FSDP runs: torch.distributed.checkpoint, every rank writing its
own shards, and reading them back under another process count reshards. Only weights that train are
stored (a LoRA run's checkpoint is its adapter; a frozen encoder is not copied), in their master dtype,
so a resume continues exactly. A checkpoint is written into a temporary folder and renamed, so a kill
mid-save leaves the previous one intact; `latest()` only sees complete ones. A write that fails (a full
disk) removes the temporary folder and stops the run in one line; the previous checkpoint stays.
`state.json` lists every file with its size: `resume` checks them and, when the latest checkpoint is
damaged (truncated, missing a file, unreadable), says so and resumes from the one before.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lpo_speech.errors import UserError, clip


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state(),
           "numpy": torch.from_numpy(np.frombuffer(json.dumps(_np_state()).encode(), dtype=np.uint8).copy()),
           "python": torch.from_numpy(np.frombuffer(json.dumps(random.getstate()).encode(), dtype=np.uint8).copy())}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), pos, has_gauss, cached]


def set_rng_state(t: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(t["torch"])
    name, keys, pos, has_gauss, cached = json.loads(bytes(t["numpy"].numpy()).decode())
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    py = json.loads(bytes(t["python"].numpy()).decode())
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in t and torch.cuda.is_available():
        torch.cuda.set_rng_state(t["cuda"])


def trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights that train, by name, on the CPU (tied weights once: named_parameters dedups)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    sched: Any, *, rank: int, world: int, keep: int, sharded: bool = False,
                    optimizer: bool = True) -> Path:
    """Every rank writes its RNG state (and, `sharded`, its DCP shards); rank 0 writes the rest, then
    renames. Call on all ranks. `optimizer=False` (train.save_optimizer): the weights, schedule and RNG
    only; a resume from it starts the optimizer afresh (and says so)."""
    from lpo_speech.distributed import barrier

    final = run_dir / "checkpoints" / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    state: dict[str, Any] = {"step": step, "world": world, "scheduler": sched.state_dict()}
    try:
        save_file(rng_state(), str(tmp / f"rng-rank{rank}.safetensors"))
        if sharded:
            import torch.distributed.checkpoint as dcp

            dcp.save(_sharded_state(model, opt if optimizer else None), checkpoint_id=str(tmp / "dcp"))
            state["format"] = "dcp"
        elif rank == 0:
            save_file(trainable_tensors(model), str(tmp / "model.safetensors"))
            if optimizer:
                tensors, meta = _optimizer_tensors(opt)
                save_file(tensors, str(tmp / "optimizer.safetensors"))
                state["optimizer"] = meta
        state["has_optimizer"] = optimizer
        barrier()
        if rank == 0:
            state["files"] = {f.relative_to(tmp).as_posix(): f.stat().st_size
                              for f in sorted(tmp.rglob("*")) if f.is_file()}
            (tmp / "state.json").write_text(json.dumps(state))
    except Exception as e:  # a full disk, a quota, a lost mount: the previous checkpoint stays
        if not _write_error(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        before = latest(run_dir)
        kept = f"the previous checkpoint {before.name} is intact" if before else "there is no earlier checkpoint"
        raise UserError(f"could not write checkpoint {final.name} ({clip(str(e), 120)}); {kept}: free space and "
                        "continue with --resume", where=str(run_dir / "checkpoints")) from None
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted((run_dir / "checkpoints").glob("step-??????"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _write_error(e: BaseException) -> bool:
    """An error of the storage, not of the program: OSError, and safetensors' or DCP's report of one."""
    if isinstance(e, OSError):
        return True
    text = str(e)
    return type(e).__name__ in ("SafetensorError", "CheckpointException") and (
        "I/O error" in text or "os error" in text or "Errno" in text or "space" in text)


def _sharded_state(model: torch.nn.Module, opt: torch.optim.Optimizer | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    if opt is None:
        return {"model": get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True))}
    msd, osd = get_state_dict(model, opt, options=StateDictOptions(ignore_frozen_params=True))
    return {"model": msd, "optim": osd}


def latest(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step-??????"))
    return found[-1] if found else None


def damage(ckpt: Path) -> str | None:
    """What is wrong with a checkpoint's files (None: complete as listed in its state.json)."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError) as e:
        return f"state.json: {clip(getattr(e, 'strerror', None) or str(e), 60)}"
    files = state.get("files")
    if files is None:  # written before sizes were listed: the files it needs
        files = {"dcp/.metadata": None} if state.get("format") == "dcp" else {
            "model.safetensors": None, **({"optimizer.safetensors": None} if "optimizer" in state else {})}
    for name, size in files.items():
        f = ckpt / name
        if not f.is_file():
            return f"{name}: missing"
        if size is not None and f.stat().st_size != size:
            return f"{name}: {f.stat().st_size:,} bytes, {size:,} written"
    return None


def resume(run_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, *, info) -> int:
    """Load the latest good checkpoint (every process) and return its step. A damaged one (`damage`, or
    one any process cannot read) is passed over, newest first, with one line saying so; none good is a
    UserError. 0 when the run has no checkpoint."""
    from lpo_speech.distributed import all_reduce_max

    found = sorted((run_dir / "checkpoints").glob("step-??????"), reverse=True)
    skipped = []
    for ckpt in found:
        problem = damage(ckpt)
        if problem is None:
            try:
                step = load_checkpoint(ckpt, model, opt, sched, rank=info.rank, device=info.device)
            except UserError:
                raise  # another model's checkpoint: not damage
            except Exception as e:  # unreadable bytes; the next candidate overwrites what was loaded
                problem, step = f"unreadable: {clip(str(e), 80)}", -1
            if all_reduce_max(int(step < 0), info.device):  # every process must have read it
                problem = problem or "unreadable on another process"
        if problem is None:
            if skipped and info.is_main:
                print(f"resume: {'; '.join(skipped)}: resuming from {ckpt.name} (step {step})", flush=True)
            return step
        skipped.append(f"{ckpt.relative_to(run_dir)} is damaged ({problem})")
    if skipped:
        raise UserError(f"no readable checkpoint to resume from ({'; '.join(skipped)}): remove the checkpoints "
                        "folder to start over", where=str(run_dir))
    return 0


def load_checkpoint(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, *,
                    rank: int, device: torch.device) -> int:
    """Restore everything saved by `save_checkpoint`; returns the step to continue from."""
    state = json.loads((ckpt / "state.json").read_text())
    with_opt = state.get("has_optimizer", True)
    if state.get("format") == "dcp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

        sd = _sharded_state(model, opt if with_opt else None)
        dcp.load(sd, checkpoint_id=str(ckpt / "dcp"))
        # The checkpoint holds what trains (dcp.load above requires every such key); frozen weights (a
        # LoRA base, a frozen encoder) come from the model as loaded, so they are not "missing" here.
        options = StateDictOptions(ignore_frozen_params=True, strict=False)
        if with_opt:
            set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"], options=options)
        else:
            set_model_state_dict(model, sd["model"], options=options)
    else:
        saved = load_file(str(ckpt / "model.safetensors"), device=str(device))
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if set(saved) != set(params):
            raise UserError(f"holds other weights than this run trains ({len(saved)} saved, {len(params)} "
                            "trainable): was it made with the same model and model.lora settings?", where=str(ckpt))
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
        if with_opt:
            _restore_optimizer(opt, load_file(str(ckpt / "optimizer.safetensors"), device=str(device)),
                               state["optimizer"])
    if not with_opt and rank == 0:
        print(f"resume: {ckpt.name} holds no optimizer state (train.save_optimizer: false): the optimizer "
              "starts afresh, so the run does not continue exactly", flush=True)
    sched.load_state_dict(state["scheduler"])
    rng_file = ckpt / f"rng-rank{rank}.safetensors"
    if rng_file.exists():  # a resume on a different world size cannot restore per-rank RNG exactly
        set_rng_state(load_file(str(rng_file)))
    return int(state["step"])
