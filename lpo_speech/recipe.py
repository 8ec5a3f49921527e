"""Recipes: YAML files validated strictly against dataclasses, with `key=value` overrides.

Every hyperparameter lives in the recipe. An unknown key, a wrong type or an out-of-range value is
one line naming the recipe and the dotted key (exit 2). Paths in a recipe are relative to the
directory you run from. `lpo-speech train recipe.yaml train.lr=1e-6 loss.r2=0.5` overrides fields;
the effective config is saved as `config.yaml` in the run directory.

This module is the one place recipes are defined and read: the shared sections (model, data, train,
loss, reference, runtime), `TrainRecipe` (what training reads), `TrackRecipe` (the base of the track
recipes, which add their `build_pairs` section in lpo_speech.asr.recipe and lpo_speech.tts.recipe),
the `track:` registry, and loading: a file is parsed once (`read_recipe`: safe YAML without aliases),
the overrides applied to that mapping, the track read from it, and the same mapping validated.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

import yaml

from lpo_speech.distributed import DEVICE_CHOICES, valid_device
from lpo_speech.errors import UserError, clip, short
from lpo_speech.logps import CODEBOOK_REDUCTIONS
from lpo_speech.losses import LOSSES
from lpo_speech.precision import DTYPES


def require(cond: bool, key: str, msg: str) -> None:
    """A recipe check: `key: msg` as a ValueError (build_recipe turns it into one located UserError)."""
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
        require(self.r >= 1, "model.lora.r", "must be >= 1")
        require(self.alpha > 0 and math.isfinite(self.alpha), "model.lora.alpha", "must be > 0")
        require(0 <= self.dropout < 1, "model.lora.dropout", "must be in [0, 1)")
        require(bool(self.target_modules) and all(isinstance(t, str) and t for t in self.target_modules),
              "model.lora.target_modules", "module names, e.g. [q_proj, v_proj], or [all-linear]")
        require(self.save in ("merged", "adapter", "both"), "model.lora.save", "merged, adapter or both")


@dataclass
class ModelConfig:
    path: str  # local directory (save_pretrained) or hub id
    adapter: str = "causal_lm"  # causal_lm | whisper | audio_llm
    dtype: str = "auto"  # the weights' dtype: auto (bfloat16 on a GPU with bf16, else float32) | float32 | bfloat16
    gradient_checkpointing: bool = False  # activation checkpointing (recompute layers in backward)
    lora: LoraSettings | None = None  # train a LoRA adapter instead of every weight (peft)
    num_codebooks: int = 1  # tokens per codec frame in the response stream
    codebook_reduction: str = "flat"  # flat | sum | first | level (see lpo_speech.logps)
    codebook_levels: list[int] | None = None  # "level": each slot's codebook level (SNAC / Orpheus: [0,1,2,2,1,2,2])
    language: str | None = None  # whisper: multilingual models' language token (e.g. en); None for *.en
    task: str | None = None  # whisper: transcribe | translate; None for *.en
    freeze_encoder: bool = False  # whisper, audio_llm: freeze the encoder (audio tower); its states computed once per audio
    instruction: str | None = None  # audio_llm: the text instruction of the prompt (None: the model's own or "Transcribe the audio.")

    def validate(self) -> None:
        require(self.adapter in ADAPTERS, "model.adapter", f"one of {sorted(ADAPTERS)}")
        require(self.dtype in ("auto", *DTYPES), "model.dtype", "auto, float32 or bfloat16")
        require(self.num_codebooks >= 1, "model.num_codebooks", "must be >= 1")
        require(self.codebook_reduction in CODEBOOK_REDUCTIONS, "model.codebook_reduction",
              f"one of {list(CODEBOOK_REDUCTIONS)}")
        levels = self.codebook_levels
        require(self.codebook_reduction != "level" or (isinstance(levels, list) and len(levels) == self.num_codebooks
                                                       and all(isinstance(v, int) and v >= 0 for v in levels)),
              "model.codebook_levels", "for codebook_reduction level: one level (int >= 0) per slot "
              "(model.num_codebooks of them)")
        require(levels is None or self.codebook_reduction == "level", "model.codebook_levels",
              "only with codebook_reduction: level")
        require(self.adapter == "whisper" or (self.language is None and self.task is None),
              "model.language/task", "only for the whisper adapter")
        require(self.adapter in ("whisper", "audio_llm") or not self.freeze_encoder, "model.freeze_encoder",
              "only for the whisper and audio_llm adapters")
        require(self.instruction is None or (self.adapter == "audio_llm" and bool(self.instruction.strip())),
              "model.instruction", "a non-empty text, only for the audio_llm adapter")
        require(self.task in (None, "transcribe", "translate"), "model.task", "transcribe or translate")


ADAPTERS = {"causal_lm": "lpo_speech.adapters.causal_lm:CausalLMAdapter",
            "whisper": "lpo_speech.adapters.whisper:WhisperAdapter",
            "audio_llm": "lpo_speech.adapters.audio_llm:AudioLLMAdapter"}


@dataclass
class DataConfig:
    pairs: str  # preference pair JSONL (docs/formats.md)
    max_length: int = 4096  # pairs whose prompt + longer response exceed this are dropped (counted)
    length_buckets: bool = True  # batch pairs of similar length to cut padding
    limit: int = 0  # train on the file's first N pairs only (0: all; `train --smoke` sets it)

    def validate(self) -> None:
        require(self.max_length >= 2, "data.max_length", "must be >= 2")
        require(self.limit >= 0, "data.limit", "must be >= 0 (0: every pair)")


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
        require(self.type in LOSSES, "loss.type", f"one of {sorted(LOSSES)}")
        require(0 < self.beta <= 100, "loss.beta", f"must be > 0 and <= 100, got {self.beta}")
        require(0 < self.r1 <= 100, "loss.r1", f"must be > 0 and <= 100, got {self.r1}")
        require(0 < self.r2 <= 100, "loss.r2", f"must be > 0 and <= 100, got {self.r2}")
        require(0 <= self.gamma <= 1000, "loss.gamma", f"must be in [0, 1000], got {self.gamma}")
        require(0 <= self.label_smoothing < 0.5, "loss.label_smoothing", "must be in [0, 0.5)")
        require(0 <= self.sft_weight <= 1000, "loss.sft_weight", f"must be in [0, 1000], got {self.sft_weight}")
        require(self.type != "sft" or self.sft_weight > 0, "loss.sft_weight", "must be > 0 for loss.type sft")
        # sft has no reference: the regularizer would silently be gamma x NLL on top of the NLL term.
        require(self.type != "sft" or self.gamma == 0, "loss.gamma", "must be 0 for loss.type sft")


@dataclass
class ReferenceConfig:
    source: str = "precomputed"  # precomputed: ref log-probs from the pair file | model: frozen copy
    path: str | None = None  # reference model for source=model (default: model.path)

    def validate(self) -> None:
        require(self.source in ("precomputed", "model"), "reference.source", "precomputed or model")


@dataclass
class TrainConfig:
    out_dir: str
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # [s1, s2, ...]: one run per seed, then their average (a model soup)
    lr: float = 1e-6
    min_lr: float = 0.0  # cosine floor
    warmup_steps: int = 0
    max_steps: int = 0  # 0 = derived from epochs
    epochs: float = 1.0
    batch_size: int = 4  # pairs per device per micro-step (online: rows, pairs or GRPO candidates, per forward)
    grad_accum: int = 1
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 disables clipping
    log_every: int = 1
    save_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    save_optimizer: bool = True  # false: checkpoints hold no optimizer state (a third of the size), none after the last step
    strategy: str = "ddp"  # ddp (a full replica per process) | fsdp (FSDP2: weights, gradients, optimizer sharded)
    master_dtype: str = "float32"  # dtype of the weights the optimizer updates (bfloat16: no fp32 master copy)
    fsdp_cpu_offload: bool = False  # fsdp: keep sharded weights, gradients and optimizer state in CPU memory
    fsdp_reshard_after_forward: bool = True  # fsdp: free gathered weights after forward (less memory, more traffic)

    def validate(self) -> None:
        require(0 < self.lr <= 1, "train.lr", f"must be > 0 and <= 1, got {self.lr}")
        require(0 <= self.min_lr <= self.lr, "train.min_lr", f"must be in [0, lr], got {self.min_lr}")
        require(self.warmup_steps >= 0 and self.max_steps >= 0, "train.warmup_steps/max_steps", "must be >= 0")
        require(self.epochs > 0 or self.max_steps > 0, "train.epochs", "must be > 0 when max_steps is 0")
        require(self.batch_size >= 1 and self.grad_accum >= 1, "train.batch_size/grad_accum", "must be >= 1")
        require(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "train.adam_betas",
              "two values in [0, 1)")
        require(0 < self.adam_eps <= 1e-2, "train.adam_eps", f"must be > 0 and <= 0.01, got {self.adam_eps}")
        require(0 <= self.weight_decay <= 10, "train.weight_decay", f"must be in [0, 10], got {self.weight_decay}")
        require(self.max_grad_norm >= 0, "train.max_grad_norm", f"must be >= 0 (0 disables clipping), got {self.max_grad_norm}")
        require(self.log_every >= 1 and self.save_every >= 0 and self.keep_checkpoints >= 1,
              "train.log_every/save_every/keep_checkpoints", "log_every >= 1, save_every >= 0, keep >= 1")
        require(len(set(self.seeds)) == len(self.seeds) and len(self.seeds) != 1, "train.seeds",
              "empty (one run with train.seed) or two or more distinct seeds")
        require(self.strategy in STRATEGIES, "train.strategy", f"one of {', '.join(STRATEGIES)}")
        require(self.master_dtype in DTYPES, "train.master_dtype", "float32 or bfloat16")
        require(self.strategy == "fsdp" or not self.fsdp_cpu_offload, "train.fsdp_cpu_offload", "needs strategy fsdp")


STRATEGIES = ("ddp", "fsdp")


@dataclass
class RuntimeConfig:
    """Where every stage of the recipe runs (lpo_speech.distributed.resolve_device)."""

    device: str = "auto"  # auto (cuda:LOCAL_RANK when CUDA is present, else cpu) | cpu | cuda
    judge_device: str | None = None  # judges and scorers (ASR judge, similarity, emotion, codec): null = device
    threads: int | None = None  # torch CPU threads of each process (null: torch's default)
    sampling_threads: int | None = None  # torch CPU threads while sampling codec tokens (null: threads)

    def validate(self) -> None:
        require(self.device in DEVICE_CHOICES, "runtime.device", "auto, cpu or cuda")
        require(self.judge_device is None or valid_device(self.judge_device), "runtime.judge_device",
              "null, auto, cpu, cuda or cuda:N")
        require(self.threads is None or self.threads >= 1, "runtime.threads", "null or >= 1")
        require(self.sampling_threads is None or self.sampling_threads >= 1, "runtime.sampling_threads", "null or >= 1")


@dataclass
class TrainRecipe:
    """What `lpo-speech train` reads. Track recipes add their own sections (build_pairs, eval)."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    loss: LossConfig = field(default_factory=LossConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


REWARD_TERMS = ("cer", "wer", "sim", "emotion", "dnsmos", "failure", "duration")  # lpo_speech.rewards


@dataclass
class OnlineConfig:
    """`online:` training: every `sample_every` optimizer steps, the current policy samples `samples`
    candidates for each of `prompts_per_step` prompts (split over the processes), the recipe's judges
    score them, and the reward (a weighted sum of judge terms: lpo_speech.rewards) makes the signal:
    best-vs-worst pairs trained with `loss` (algorithm: pairs; LPO, DPO, ...) or group-normalized
    advantages (algorithm: grpo). Runs for `train.max_steps` steps (lpo_speech.online)."""

    algorithm: str = "pairs"  # pairs (best vs worst reward per prompt, loss.type) | grpo
    prompts_per_step: int = 4  # prompts sampled per optimizer step, over all processes
    samples: int = 4  # candidates per prompt (the GRPO group)
    sample_every: int = 1  # K: sample anew every K steps; the steps between reuse the last candidates
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    rewards: dict[str, float] = field(default_factory=lambda: {"cer": 1.0})  # term -> weight
    min_reward_gap: float = 0.0  # pairs: the best's reward must exceed the worst's by more than this
    normalize: str = "std"  # grpo: std ((r - mean) / (std + 1e-4), GRPO) | none (r - mean, Dr. GRPO)
    kl_coef: float = 0.0  # grpo: weight of the KL to the reference (0: no reference needed)
    judge_workers: int = 0  # TTS: score in N worker processes (lpo_speech.tts.judge_pool); 0: in the training process

    def validate(self) -> None:
        require(self.algorithm in ("pairs", "grpo"), "online.algorithm", "pairs or grpo")
        require(self.prompts_per_step >= 1 and self.samples >= 2 and self.sample_every >= 1,
                "online.prompts_per_step/samples/sample_every", "prompts >= 1, samples >= 2 (a group), sample_every >= 1")
        require(self.temperature > 0 and 0 < self.top_p <= 1 and self.top_k >= 0, "online.temperature/top_p/top_k",
                "temperature > 0, top_p in (0, 1], top_k >= 0")
        require(bool(self.rewards) and all(k in REWARD_TERMS and math.isfinite(v) for k, v in self.rewards.items()),
                "online.rewards", f"term -> finite weight, terms from {', '.join(REWARD_TERMS)}")
        require(self.min_reward_gap >= 0, "online.min_reward_gap", "must be >= 0")
        require(self.normalize in ("std", "none"), "online.normalize", "std or none")
        require(self.kl_coef >= 0, "online.kl_coef", "must be >= 0")
        require(self.judge_workers >= 0, "online.judge_workers", "must be >= 0")


@dataclass
class RoundsConfig:
    """`rounds:` offline rounds in one `lpo-speech train`: each round takes the next `prompts_per_round`
    prompts, samples them from the current policy, scores, builds pairs with their reference
    log-probs and trains (the recipe's build_pairs and train settings), then the next round starts
    from that model (lpo_speech.rounds)."""

    n: int = 2
    prompts_per_round: int = 200
    reference: str = "round_start"  # round_start: each round's starting model | sft: the recipe's model.path

    def validate(self) -> None:
        require(self.n >= 1 and self.prompts_per_round >= 1, "rounds.n/prompts_per_round", "must be >= 1")
        require(self.reference in ("round_start", "sft"), "rounds.reference", "round_start or sft")


@dataclass(kw_only=True)
class TrackRecipe:
    """The base of the track recipes (`track: asr`, `track: tts`): the training sections, plus the
    track's `build_pairs` section (declared by each subclass) and the offline twin named when the hub
    is unreachable. `train_recipe()` narrows it to what training reads."""

    TRACK: ClassVar[str] = ""
    ADAPTERS: ClassVar[tuple[str, ...]] = ()  # model.adapter values the track's code can drive

    track: str
    model: ModelConfig
    data: DataConfig  # data.pairs is where build-pairs writes (with reference log-probs) and train reads
    train: TrainConfig
    loss: LossConfig = field(default_factory=LossConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    offline_twin: str | None = None  # a recipe that runs without hub access; named when the hub is unreachable
    online: OnlineConfig | None = None  # train on fresh samples of the current policy (lpo_speech.online)
    rounds: RoundsConfig | None = None  # offline rounds: build pairs and train, n times (lpo_speech.rounds)

    def validate(self) -> None:
        require(self.track == self.TRACK, "track", self.TRACK)
        require(self.online is None or self.rounds is None, "online/rounds", "one of them, not both")
        if self.online is not None:
            o, live = self.online, self.reference.source == "model" or self.model.lora is not None
            require(self.train.max_steps > 0, "train.max_steps", "online training runs train.max_steps steps: set it")
            require(not self.train.seeds, "train.seeds", "a soup of online runs is not supported: train them apart")
            require(self.train.grad_accum == 1, "train.grad_accum", "1 for online training (a step is one batch of prompts, "
                    "micro-batched by train.batch_size)")
            require(o.algorithm == "grpo" or self.loss.type != "sft", "loss.type",
                    "online pairs need a preference loss (lpo-ste, sigmoid, ...)")
            require(live or (o.algorithm == "grpo" and o.kl_coef == 0), "reference.source",
                    "model (or LoRA): online pairs and the GRPO KL need the reference's log-probs of fresh samples")
        if self.rounds is not None:
            require(self.reference.source == "precomputed", "reference.source",
                    "precomputed for rounds (each round's build-pairs stores its reference log-probs)")
            require(not self.train.seeds, "train.seeds", "rounds train one run per round, not a soup")
        require(self.offline_twin is None or self.offline_twin.endswith((".yaml", ".yml")), "offline_twin",
                "a recipe file (.yaml)")
        require(self.model.adapter in self.ADAPTERS, "model.adapter",
                f"{' or '.join(self.ADAPTERS)} for the {self.TRACK.upper()} track")

    def train_recipe(self) -> TrainRecipe:
        return TrainRecipe(model=self.model, data=self.data, train=self.train, loss=self.loss, reference=self.reference,
                           runtime=self.runtime)


# ------------------------------------------------------------------------------------ loading

class AliasRefused(yaml.MarkedYAMLError):
    """A YAML alias (`*name`) in a recipe or an override value."""


class RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses aliases outright, at the first `*name` it composes.

    An alias repeats a node by reference, so nine nested aliases of ten items each ("billion laughs")
    are a few hundred bytes of YAML and 10^9 values once anything walks, formats or hashes them (an
    error message, a settings hash, json.dumps). No recipe needs them; refusing them here means nothing
    downstream ever sees such a value."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise AliasRefused(problem=f"YAML aliases (*name) are not supported in recipes (found *{event.anchor})",
                               problem_mark=event.start_mark)
        return super().compose_node(parent, index)


def _yaml_problem(e: yaml.YAMLError) -> str:
    return clip(getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0])


def parse_yaml(text: str, origin: str, *, file: bool = True) -> Any:
    """YAML `text` with `RecipeLoader`; every problem is one `UserError`. `origin` names where the text
    came from (the recipe file, or `override '...'`); for a file, errors carry its line."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
    except AliasRefused as e:
        where = f"{origin}:{e.problem_mark.line + 1}" if file else origin
        raise UserError("YAML aliases (*name) are not supported in recipes", where=where) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None and file else origin
        raise UserError(f"invalid YAML ({_yaml_problem(e)})", where=where) from None
    except RecursionError:
        raise UserError("invalid YAML (nested too deeply)", where=origin) from None
    except ValueError as e:  # e.g. an integer literal longer than Python converts (4300 digits)
        raise UserError(f"invalid YAML ({clip(str(e).split(':')[0])})", where=origin) from None


def read_recipe(path: str | Path) -> dict:
    """The raw mapping of a recipe file (safe YAML, no aliases); every problem is one `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text (byte {e.start}: {e.reason})", where=str(path)) from None
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror or e})", where=str(path)) from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"expected a mapping of sections (model:, data:, train:, ...), got a {_kind(raw)}",
                        where=str(path))
    return raw


def _kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__)


INT_LIMIT = 2**63  # a recipe's counts and seeds fit 64 bits (torch, numpy)


def _check_finite(value: Any, key: str) -> None:
    """Refuse NaN and infinities anywhere in a free-form value (judge or scorer settings)."""
    stack = [(value, key)]
    while stack:
        v, k = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{k}: must be a finite number, got {v}")
        if isinstance(v, dict):
            stack.extend((item, f"{k}.{_key_text(name)}") for name, item in v.items())
        elif isinstance(v, list):
            stack.extend((item, f"{k}[{i}]") for i, item in enumerate(v))


def _key_text(k: Any) -> str:
    return k if isinstance(k, str) and len(k) <= 80 and "\n" not in k else short(k)


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
            if not -INT_LIMIT < value < INT_LIMIT:
                raise ValueError(f"{key}: out of range, got {short(value)}")
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float range
                number = math.inf
        elif isinstance(value, str) and len(value) <= 100:  # YAML 1.1 reads "1e-6" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ValueError(f"{key}: must be a finite number, got {short(value)}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item,) = get_args(tp)
        if isinstance(value, list):
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            _, item = get_args(tp) or (str, Any)
            if item is Any:  # free-form settings (a judge, a scorer): any values, but finite numbers
                _check_finite(value, key)
                return value
            return {k: _coerce(v, item, f"{key}.{_key_text(k)}") for k, v in value.items()}
    elif tp is Any:
        _check_finite(value, key)
        return value
    else:  # pragma: no cover - schema bug
        raise TypeError(f"unsupported recipe type {tp} at {key}")
    name = getattr(tp, "__name__", str(tp))
    raise ValueError(f"{key}: expected {name}, got {short(value)}")


# Keys that moved to another section: the error says where they went.
MOVED = {("train", "device"): "write `runtime: {device: auto|cpu|cuda}` (one placement for every stage)"}


def _build(cls: Any, d: Any, prefix: str = "") -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{prefix or 'recipe'}: expected a mapping, got {short(d)}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in d:
        if k not in names:
            if (prefix, k) in MOVED:
                raise ValueError(f"'{prefix}.{k}' moved: {MOVED[prefix, k]}")
            raise ValueError(f"unknown key '{prefix + '.' if prefix else ''}{_key_text(k)}' "
                             f"(known: {', '.join(sorted(names))})")
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


def apply_overrides(raw: Any, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML, no aliases) to a raw recipe mapping."""
    if overrides and not isinstance(raw, dict):
        raise UserError(f"override {short(overrides[0])}: the recipe is a {_kind(raw)}; expected a mapping "
                        "of sections (model:, data:, train:, ...)")
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {short(item)}: expected key=value, e.g. train.lr=1e-6")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise UserError(f"override {short(item)}: expected key=value with a dotted key, e.g. train.lr=1e-6")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override {short(item)}: '{_key_text(p)}' is not a section")
        node[parts[-1]] = parse_yaml(text, f"override {short(item)}", file=False) if text.strip() else None
    return raw


def build_recipe(cls: Any, raw: Any, path: str | Path) -> Any:
    """Validate a raw (overridden) mapping against `cls`; a problem is one `UserError` naming `path`."""
    try:
        return _build(cls, raw)
    except ValueError as e:
        raise UserError(str(e), where=str(path)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None, cls: Any = TrainRecipe, *,
                raw: dict | None = None) -> Any:
    """Load, override and validate a recipe; every problem is one `UserError` line naming the file.
    `raw`: the file's mapping when the caller has read it already (`read_recipe`); overrides apply to it."""
    raw = read_recipe(path) if raw is None else raw
    raw = apply_overrides(raw, overrides or [])
    return build_recipe(cls, raw, path)


def to_dict(recipe: Any) -> dict:
    return dataclasses.asdict(recipe)


def save_recipe(recipe: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False))


# ------------------------------------------------------------------------------------ tracks

# `track:` key -> recipe dataclass "module:Class". The base schema has no `track` key. A track recipe
# has `train_recipe()` (its training sections).
TRACKS: dict[str, str] = {
    "asr": "lpo_speech.asr.recipe:AsrRecipe",
    "tts": "lpo_speech.tts.recipe:TtsRecipe",
}
# `track:` key -> its build-pairs stage "module:function(recipe, quiet=, overwrite=) -> stats". Kept apart
# from the recipe classes so a track's pair builder may import its recipe without a cycle.
# `track:` key -> its online task "module:Class(recipe, policy, adapter, info, dtype)" (lpo_speech.online).
ONLINE_TASKS: dict[str, str] = {
    "asr": "lpo_speech.asr.online:AsrOnline",
    "tts": "lpo_speech.tts.online:TtsOnline",
}
PAIR_BUILDERS: dict[str, str] = {
    "asr": "lpo_speech.asr.pairs:build_asr_pairs",
    "tts": "lpo_speech.tts.pairs:build_tts_pairs",
}


def named(spec: str) -> Any:
    """The object a "module:name" registry entry names (imported on first use)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def track_class(raw: dict, path: str | Path) -> Any:
    """The recipe dataclass for a raw recipe mapping (its `track:` key)."""
    track = raw.get("track") if isinstance(raw, dict) else None
    if track is None:
        return TrainRecipe
    if not isinstance(track, str) or track not in TRACKS:
        raise UserError(f"unknown track {short(track)} (known: {', '.join(sorted(TRACKS)) or 'none'})",
                        where=str(path))
    return named(TRACKS[track])


def recipe_class(path: str | Path) -> Any:
    """The recipe dataclass of a recipe file (reads it; `load_any_recipe` reads it once for both)."""
    return track_class(read_recipe(path), path)


def load_any_recipe(path: str | Path, overrides: list[str] | None = None) -> Any:
    raw = apply_overrides(read_recipe(path), overrides or [])
    return build_recipe(track_class(raw, path), raw, path)


def train_view(recipe: Any) -> TrainRecipe:
    """A loaded recipe, narrowed to what training needs (its model, data, train, loss, reference)."""
    return recipe if isinstance(recipe, TrainRecipe) else recipe.train_recipe()


def load_train_recipe(path: str | Path, overrides: list[str] | None = None) -> TrainRecipe:
    """Any recipe, narrowed to what training needs (its model, data, train, loss, reference)."""
    return train_view(load_any_recipe(path, overrides))


def build_pairs(recipe: Any, *, quiet: bool = False, overwrite: bool = False, skip_bad: bool = False) -> dict:
    """Run a track recipe's build-pairs stage (sample, score, pair, reference log-probs); returns its stats.
    `skip_bad` (ASR): leave out manifest lines whose audio cannot carry their transcript instead of stopping."""
    track = getattr(recipe, "track", None)
    if track not in PAIR_BUILDERS:
        raise UserError("build-pairs needs a track recipe (track: asr or tts); this one has no `track:` key")
    pairs = Path(recipe.data.pairs)
    if recipe.reference.source == "model" and "_ref" in pairs.stem:  # named for what it holds
        raise UserError(f"{pairs.name}: with reference.source model the pair file holds no reference log-probs (the "
                        f"trainer runs the reference), so it is not named *_ref: use e.g. "
                        f"{Path(recipe.build_pairs.work_dir) / 'pairs.jsonl'}", where="data.pairs")
    if skip_bad and track != "asr":
        raise UserError(f"--skip-bad: for an ASR recipe's manifest (its audio checked against its transcript); "
                        f"this recipe's track is {track}")
    return named(PAIR_BUILDERS[track])(recipe, quiet=quiet, overwrite=overwrite,
                                       **({"skip_bad": True} if skip_bad else {}))
