"""Recipes: YAML files validated strictly against dataclasses, with `key=value` overrides.

Every hyperparameter lives in the recipe. An unknown key, a wrong type or an out-of-range value is
one line naming the recipe and the dotted key (exit 2). Paths in a recipe are relative to the
directory you run from. `lpo-speech train recipe.yaml train.lr=1e-6 loss.r2=0.5` overrides fields;
the effective config is saved as `config.yaml` in the run directory.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from lpo_speech.distributed import DEVICE_CHOICES, valid_device
from lpo_speech.errors import UserError
from lpo_speech.logps import CODEBOOK_REDUCTIONS
from lpo_speech.losses import LOSSES
from lpo_speech.precision import DTYPES


def _need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{key}: {msg}")


@dataclass
class LoraSettings:
    """LoRA with peft: only the adapter trains; the reference is the same model with it disabled."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    save: str = "merged"  # what the run's model/ holds: merged (full weights) | adapter (peft folder) | both

    def validate(self) -> None:
        _need(self.r >= 1, "model.lora.r", "must be >= 1")
        _need(self.alpha > 0 and math.isfinite(self.alpha), "model.lora.alpha", "must be > 0")
        _need(0 <= self.dropout < 1, "model.lora.dropout", "must be in [0, 1)")
        _need(bool(self.target_modules) and all(isinstance(t, str) and t for t in self.target_modules),
              "model.lora.target_modules", "module names, e.g. [q_proj, v_proj], or [all-linear]")
        _need(self.save in ("merged", "adapter", "both"), "model.lora.save", "merged, adapter or both")


@dataclass
class ModelConfig:
    path: str  # local directory (save_pretrained) or hub id
    adapter: str = "causal_lm"  # causal_lm | whisper
    dtype: str = "auto"  # the weights' dtype: auto (bfloat16 on a GPU with bf16, else float32) | float32 | bfloat16
    gradient_checkpointing: bool = False  # activation checkpointing (recompute layers in backward)
    lora: LoraSettings | None = None  # train a LoRA adapter instead of every weight (peft)
    num_codebooks: int = 1  # tokens per codec frame in the response stream
    codebook_reduction: str = "flat"  # flat | sum | first (see lpo_speech.logps)
    language: str | None = None  # whisper: multilingual models' language token (e.g. en); None for *.en
    task: str | None = None  # whisper: transcribe | translate; None for *.en
    freeze_encoder: bool = False  # whisper: train the decoder only; encoder states computed once per audio

    def validate(self) -> None:
        _need(self.adapter in ADAPTERS, "model.adapter", f"one of {sorted(ADAPTERS)}")
        _need(self.dtype in ("auto", *DTYPES), "model.dtype", "auto, float32 or bfloat16")
        _need(self.num_codebooks >= 1, "model.num_codebooks", "must be >= 1")
        _need(self.codebook_reduction in CODEBOOK_REDUCTIONS, "model.codebook_reduction",
              f"one of {list(CODEBOOK_REDUCTIONS)}")
        _need(self.adapter == "whisper" or (self.language is None and self.task is None and not self.freeze_encoder),
              "model.language/task/freeze_encoder", "only for the whisper adapter")
        _need(self.task in (None, "transcribe", "translate"), "model.task", "transcribe or translate")


ADAPTERS = {"causal_lm": "lpo_speech.adapters.causal_lm:CausalLMAdapter",
            "whisper": "lpo_speech.adapters.whisper:WhisperAdapter"}


@dataclass
class DataConfig:
    pairs: str  # preference pair JSONL (docs/formats.md)
    max_length: int = 4096  # pairs whose prompt + longer response exceed this are dropped (counted)
    length_buckets: bool = True  # batch pairs of similar length to cut padding

    def validate(self) -> None:
        _need(self.max_length >= 2, "data.max_length", "must be >= 2")


@dataclass
class LossConfig:
    type: str = "lpo-ste"
    beta: float = 0.2
    r1: float = 1.0
    r2: float = 0.8
    gamma: float = 5.0  # positive regularizer gamma * relu(-x1)
    label_smoothing: float = 0.0  # sigmoid (DPO) only
    sft_weight: float = 0.0  # NLL on the chosen response
    average_logps: bool = True  # length-average sequence log-probs (the LPO authors' setting)

    def validate(self) -> None:
        _need(self.type in LOSSES, "loss.type", f"one of {sorted(LOSSES)}")
        _need(self.beta > 0, "loss.beta", "must be > 0")
        _need(self.r1 > 0 and self.r2 > 0, "loss.r1/r2", "must be > 0")
        _need(self.gamma >= 0, "loss.gamma", "must be >= 0")
        _need(0 <= self.label_smoothing < 0.5, "loss.label_smoothing", "must be in [0, 0.5)")
        _need(self.sft_weight >= 0, "loss.sft_weight", "must be >= 0")
        _need(self.type != "sft" or self.sft_weight > 0, "loss.sft_weight", "must be > 0 for loss.type sft")
        # sft has no reference: the regularizer would silently be gamma x NLL on top of the NLL term.
        _need(self.type != "sft" or self.gamma == 0, "loss.gamma", "must be 0 for loss.type sft")


@dataclass
class ReferenceConfig:
    source: str = "precomputed"  # precomputed: ref log-probs from the pair file | model: frozen copy
    path: str | None = None  # reference model for source=model (default: model.path)

    def validate(self) -> None:
        _need(self.source in ("precomputed", "model"), "reference.source", "precomputed or model")


@dataclass
class TrainConfig:
    out_dir: str
    seed: int = 0
    lr: float = 1e-6
    min_lr: float = 0.0  # cosine floor
    warmup_steps: int = 0
    max_steps: int = 0  # 0 = derived from epochs
    epochs: float = 1.0
    batch_size: int = 4  # pairs per device per micro-step
    grad_accum: int = 1
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 disables clipping
    log_every: int = 1
    save_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    strategy: str = "ddp"  # ddp (a full replica per process) | fsdp (FSDP2: weights, gradients, optimizer sharded)
    master_dtype: str = "float32"  # dtype of the weights the optimizer updates (bfloat16: no fp32 master copy)
    fsdp_cpu_offload: bool = False  # fsdp: keep sharded weights, gradients and optimizer state in CPU memory
    fsdp_reshard_after_forward: bool = True  # fsdp: free gathered weights after forward (less memory, more traffic)

    def validate(self) -> None:
        _need(self.lr > 0, "train.lr", "must be > 0")
        _need(0 <= self.min_lr <= self.lr, "train.min_lr", "must be in [0, lr]")
        _need(self.warmup_steps >= 0 and self.max_steps >= 0, "train.warmup_steps/max_steps", "must be >= 0")
        _need(self.epochs > 0 or self.max_steps > 0, "train.epochs", "must be > 0 when max_steps is 0")
        _need(self.batch_size >= 1 and self.grad_accum >= 1, "train.batch_size/grad_accum", "must be >= 1")
        _need(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "train.adam_betas",
              "two values in [0, 1)")
        _need(self.max_grad_norm >= 0 and self.weight_decay >= 0, "train.max_grad_norm/weight_decay", ">= 0")
        _need(self.log_every >= 1 and self.save_every >= 0 and self.keep_checkpoints >= 1,
              "train.log_every/save_every/keep_checkpoints", "log_every >= 1, save_every >= 0, keep >= 1")
        _need(self.strategy in STRATEGIES, "train.strategy", f"one of {', '.join(STRATEGIES)}")
        _need(self.master_dtype in DTYPES, "train.master_dtype", "float32 or bfloat16")
        _need(self.strategy == "fsdp" or not self.fsdp_cpu_offload, "train.fsdp_cpu_offload", "needs strategy fsdp")


STRATEGIES = ("ddp", "fsdp")


@dataclass
class RuntimeConfig:
    """Where every stage of the recipe runs (lpo_speech.distributed.resolve_device)."""

    device: str = "auto"  # auto (cuda:LOCAL_RANK when CUDA is present, else cpu) | cpu | cuda
    judge_device: str | None = None  # judges and scorers (ASR judge, similarity, emotion, codec): null = device
    threads: int | None = None  # torch CPU threads of each process (null: torch's default)
    sampling_threads: int | None = None  # torch CPU threads while sampling codec tokens (null: threads)

    def validate(self) -> None:
        _need(self.device in DEVICE_CHOICES, "runtime.device", "auto, cpu or cuda")
        _need(self.judge_device is None or valid_device(self.judge_device), "runtime.judge_device",
              "null, auto, cpu, cuda or cuda:N")
        _need(self.threads is None or self.threads >= 1, "runtime.threads", "null or >= 1")
        _need(self.sampling_threads is None or self.sampling_threads >= 1, "runtime.sampling_threads", "null or >= 1")


@dataclass
class TrainRecipe:
    """What `lpo-speech train` reads. Track recipes add their own sections (build_pairs, eval)."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    loss: LossConfig = field(default_factory=LossConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# ------------------------------------------------------------------------------------ loading

def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        return _coerce(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item,) = get_args(tp)
        if isinstance(value, list):
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return value
    else:  # pragma: no cover - schema bug
        raise TypeError(f"unsupported recipe type {tp} at {key}")
    name = getattr(tp, "__name__", str(tp))
    raise ValueError(f"{key}: expected {name}, got {value!r}")


# Keys that moved to another section: the error says where they went.
MOVED = {("train", "device"): "write `runtime: {device: auto|cpu|cuda}` (one placement for every stage)"}


def _build(cls: Any, d: Any, prefix: str = "") -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{prefix or 'recipe'}: expected a mapping, got {d!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in d:
        if k not in names:
            if (prefix, k) in MOVED:
                raise ValueError(f"'{prefix}.{k}' moved: {MOVED[prefix, k]}")
            raise ValueError(f"unknown key '{prefix + '.' if prefix else ''}{k}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in d:
            kwargs[f.name] = _coerce(d[f.name], hints[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"missing required key '{key}'")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a raw recipe mapping."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key=value, e.g. train.lr=1e-6")
        key, _, text = item.partition("=")
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: '{p}' is not a section")
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None, cls: Any = TrainRecipe) -> Any:
    """Load, override and validate a recipe; every problem is one `UserError` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"invalid YAML ({getattr(e, 'problem', e)})", where=where) from None
    raw = apply_overrides(raw, overrides or [])
    try:
        return _build(cls, raw)
    except ValueError as e:
        raise UserError(str(e), where=str(path)) from None


def to_dict(recipe: Any) -> dict:
    return dataclasses.asdict(recipe)


def save_recipe(recipe: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False))
