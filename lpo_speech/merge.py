"""Weight averaging of runs trained from one start: a model soup, optionally pulled back toward the start.

    merged = base + weight * (mean_i(theta_i) - base)          (base given)
    merged = mean_i(theta_i)                                   (no base)

The uniform average of several fine-tunings of the same initial model is "model soup" (Wortsman et
al., 2022); WARP (Rame et al., 2024) averages policies aligned with different seeds and then
interpolates toward their initialization ("LITI": weight < 1), trading some of the gain for less drift.
Here the runs differ only in seed (the order of the same pairs): what they agree on survives the
average, what one run picked up by chance is diluted.

Works on any model folder the trainer writes (`save_pretrained`: config.json, *.safetensors, tokenizer
or processor files): floating-point tensors are averaged in float32 and stored in their own dtype;
every other tensor, and every non-weight file, must agree across the runs and is copied from the first.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lpo_speech.errors import UserError
from lpo_speech.stages import atomic_folder


def _weight_files(model: Path) -> list[str]:
    if not model.is_dir():
        raise UserError("not a model folder", where=str(model))
    files = sorted(p.name for p in model.glob("*.safetensors"))
    if not files:
        raise UserError("no *.safetensors weights", where=str(model))
    return files


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a truncated or foreign file
        raise UserError(f"unreadable safetensors file ({e})", where=str(path)) from None


def _config(model: Path) -> dict:
    path = model / "config.json"
    if not path.exists():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON ({e.msg}, line {e.lineno})", where=str(path)) from None
    cfg.pop("_name_or_path", None)  # where it was loaded from, not what it is
    return cfg


def merge_models(models: list[str | Path], out: str | Path, *, base: str | Path | None = None,
                 weight: float = 1.0, overwrite: bool = False, device: str = "auto") -> Path:
    """Average `models` (same architecture, same files) into `out`; see the module docstring. The
    arithmetic runs on `device` (the placement rule: the GPU when there is one)."""
    from lpo_speech.distributed import resolve_device

    dev = resolve_device(device, where="--device")
    models = [Path(m) for m in models]
    out = Path(out)
    if len(models) < 2 and base is None:
        raise UserError("merge: give at least two --model folders (or one with --base)")
    if base is None and weight != 1.0:
        raise UserError("merge: --weight needs --base (the model the runs started from)")
    if not weight > 0:
        raise UserError(f"merge: --weight must be positive, got {weight}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError("exists and is not empty (pass --overwrite to replace it)", where=str(out))
    first = models[0]
    files = _weight_files(first)
    sources = models + ([Path(base)] if base is not None else [])
    for m in sources[1:]:
        if _weight_files(m) != files:
            raise UserError(f"weight files {_weight_files(m)} differ from {first}'s {files}", where=str(m))
        if _config(m) != _config(first):
            raise UserError(f"config.json differs from {first}'s (not the same architecture)", where=str(m))

    with atomic_folder(out) as tmp:  # written whole, then renamed
        for name in files:
            runs = [_load(m / name) for m in models]
            start = _load(Path(base) / name) if base is not None else None
            merged = {}
            for key, t0 in runs[0].items():
                for m, r in zip(models[1:], runs[1:]):
                    if key not in r or r[key].shape != t0.shape or r[key].dtype != t0.dtype:
                        raise UserError(f"tensor {key!r} missing or of another shape or dtype", where=str(m / name))
                if start is not None and (key not in start or start[key].shape != t0.shape):
                    raise UserError(f"tensor {key!r} missing or of another shape", where=str(Path(base) / name))
                if not t0.is_floating_point():
                    if any(not torch.equal(r[key], t0) for r in runs[1:]):
                        raise UserError(f"non-float tensor {key!r} differs between runs", where=str(name))
                    merged[key] = t0
                    continue
                mean = torch.stack([r[key].to(dev, torch.float32) for r in runs]).mean(0)
                if start is not None:
                    s = start[key].to(dev, torch.float32)
                    mean = s + weight * (mean - s)
                merged[key] = mean.to("cpu", t0.dtype).contiguous()
            if extra := [k for r, m in zip(runs[1:], models[1:]) for k in r if k not in runs[0]]:
                raise UserError(f"tensor {extra[0]!r} is not in {first / name}", where=str(name))
            save_file(merged, str(tmp / name), metadata={"format": "pt"})
        for p in first.iterdir():  # config, generation config, tokenizer: the same for every run
            if p.is_file() and not p.name.endswith(".safetensors"):
                for m in models[1:]:
                    q = m / p.name
                    if p.name != "config.json" and q.exists() and not filecmp.cmp(p, q, shallow=False):
                        raise UserError(f"{p.name} differs from {first}'s", where=str(q))
                shutil.copy2(p, tmp / p.name)
        (tmp / "merge.json").write_text(json.dumps(
            {"models": [str(m) for m in models], "base": str(base) if base is not None else None,
             "weight": weight}, indent=2) + "\n")
    return out
