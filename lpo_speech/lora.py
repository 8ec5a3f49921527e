"""LoRA through peft: train low-rank adapters on a frozen model (`model.lora` in a recipe).

    W' = W + (alpha / r) * B @ A        A: [r, in], B: [out, r], B starts at zero

so a fresh adapter leaves the model's outputs unchanged, and disabling it gives back the base model
exactly: the live reference of a LoRA run is the policy itself with its adapter disabled
(`adapter_disabled`), never a second copy in memory. peft keeps adapter weights in float32 whatever
the base's dtype (its `autocast_adapter_dtype`), so the optimizer updates an fp32 master copy of
the only weights that train.

No adapter goes inside a part of the model the recipe froze (`model.freeze_encoder`: Whisper's
encoder, an audio LLM's tower; lpo_speech.parallel.frozen_parts): the adapters compute its states
alone, once per audio, so an adapter there would never get a gradient (DDP stops on such a
parameter). peft's `exclude_modules` names those parts, and the saved adapter_config.json keeps it.

The run's `model/` folder holds, per `model.lora.save`: `merged` full weights (LoRA folded into W, a
plain model every lpo-speech tool reads), the `adapter` alone (peft's adapter_config.json +
adapter_model.safetensors, plus the tokenizer or processor), or `both` (merged in `model/`, the adapter
in `adapter/`). `lpo-speech merge --adapter DIR` folds a saved adapter into its base later.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from lpo_speech.distributed import resolve_device
from lpo_speech.errors import UserError, clip
from lpo_speech.stages import atomic_folder

ADAPTER_CONFIG = "adapter_config.json"


def peft_config(settings: Any, base_path: str, exclude: list[str] | None = None):
    """peft's LoraConfig for `model.lora`; no adapter inside the modules named in `exclude` (or below them)."""
    from peft import LoraConfig

    targets = "all-linear" if list(settings.target_modules) == ["all-linear"] else list(settings.target_modules)
    # The base recorded in the adapter: an absolute path when it is a local folder, so the adapter can
    # be merged from any working directory.
    base = str(Path(base_path).resolve()) if Path(base_path).exists() else base_path
    # A string is matched by peft against each module's full name (re.fullmatch).
    skip = "(" + "|".join(re.escape(name) for name in exclude) + r")(\..*)?" if exclude else None
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets, exclude_modules=skip, bias="none", base_model_name_or_path=base)


# peft's warnings about a wrap this module set up on purpose: not news to the user.
_EXPECTED = ("You have passed exclude_modules",  # a frozen part the targets do not match anyway
             "base_model_name_or_path` was renamed")  # peft records the path as loaded; the absolute one is kept


def apply_lora(pair_model, settings: Any, base_path: str) -> None:
    """Wrap the pair model's transformers model in a peft LoRA model (in place): the base freezes,
    only the adapter trains, and a frozen encoder gets no adapter. peft's warnings are caught: a wrap
    that fails is our one line alone, and one that succeeds passes on only the warnings that are news."""
    from peft import get_peft_model

    from lpo_speech.parallel import frozen_parts

    frozen = [name for name, _ in frozen_parts(pair_model.hf_model)]
    config = peft_config(settings, base_path, frozen)
    base = config.base_model_name_or_path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = get_peft_model(pair_model.hf_model, config)
        except ValueError as e:  # peft: target modules not found in the model (or only in a frozen part)
            raise UserError(_no_target(pair_model.hf_model, settings, frozen, e),
                            where="model.lora.target_modules") from None
    for w in caught:
        if not any(m in str(w.message) for m in _EXPECTED):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    for c in model.peft_config.values():  # peft sets the path the model was loaded by (maybe relative)
        c.base_model_name_or_path = base
    pair_model.set_hf_model(model)


def _no_target(hf_model, settings: Any, frozen: list[str], e: ValueError) -> str:
    """The line for targets peft found nothing to wrap for."""
    targets = list(settings.target_modules)
    detail = clip(str(e), 240) or type(e).__name__
    if frozen and not detail.startswith("Target modules"):  # they matched only inside the frozen part
        return (f"{targets} match no layer outside the frozen encoder ({', '.join(frozen)}; "
                f"model.freeze_encoder), which gets no adapter ({detail})")
    if detail.startswith("Target modules"):
        names = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in hf_model.named_modules()
                                   if isinstance(m, torch.nn.Linear)))
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        return f"{targets} match no module of the model (its linear layers: {shown or 'none'}; or [all-linear])"
    return detail


def is_lora(pair_model) -> bool:
    from peft import PeftModel

    return isinstance(pair_model.hf_model, PeftModel)


def adapter_disabled(pair_model):
    """Context in which a LoRA pair model computes as its base model (nothing for other models)."""
    return pair_model.hf_model.disable_adapter() if is_lora(pair_model) else contextlib.nullcontext()


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def fold_adapter(pair_model) -> None:
    """Merge the LoRA weights into the base weights and drop the peft wrapper (in place)."""
    pair_model.set_hf_model(pair_model.hf_model.merge_and_unload())


def merge_adapter(adapter_dir: str | Path, out: str | Path, *, base: str | None = None,
                  dtype: torch.dtype | None = None, device: str = "auto") -> Path:
    """`lpo-speech merge --adapter`: the base model with the saved adapter folded in, written as a plain
    model folder by the track's adapter (so tokenizer/processor files come along)."""
    from peft import PeftModel

    from lpo_speech.adapters import adapter_for_model

    adapter_dir, out = Path(adapter_dir), Path(out)
    try:
        cfg = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"not a LoRA adapter folder ({e})", where=str(adapter_dir)) from None
    base = base or cfg.get("base_model_name_or_path")
    if not base:
        raise UserError("the adapter names no base model: pass --base", where=str(adapter_dir / ADAPTER_CONFIG))
    track = adapter_for_model(base)
    pair_model = track.load(base, resolve_device(device, where="--device"), dtype or torch.float32)
    try:
        pair_model.set_hf_model(PeftModel.from_pretrained(pair_model.hf_model, str(adapter_dir)))
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"adapter does not fit base {base} ({str(e).splitlines()[0]})", where=str(adapter_dir)) from None
    fold_adapter(pair_model)
    with atomic_folder(out) as tmp:  # written whole, then renamed
        track.save(pair_model, tmp)
    return out
