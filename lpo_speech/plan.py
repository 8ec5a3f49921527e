"""GPU memory plan of a training run, per GPU, from the model's config alone (no weights are loaded).

Counts are exact: the model is built from its config on the meta device, LoRA adapters by peft on it.
P = parameters, A = trained ones (P, or the adapter's), N = GPUs sharding state (fsdp; 1 for ddp),
m / w = bytes of train.master_dtype / model.dtype. Static bytes per GPU:
  master A·m/N (the weights AdamW updates), grads A·m/N, optimizer 2·A·m/N (exp_avg, exp_avg_sq);
  weights P·w/N (frozen LoRA base); reference P·w/N (reference.source model; none under LoRA);
  comm: ddp: none (gradients are views into DDP's buckets); fsdp: root + one block of unsharded bf16 gradients
  and that block's fp32 reduce-scatter copy; copies: ddp under bf16 autocast of fp32 weights, 2 bytes
  per matmul weight (autocast's cast cache); fsdp: the root (embeddings, final norm, lm_head) and two
  blocks (current + prefetched) gathered in the param dtype; fsdp_cpu_offload moves master, grads,
  optimizer and frozen shards to the host.
Activations: tensors autograd saves per block, counted as Korthikanti et al. 2022 ("Reducing
Activation Recomputation in Large Transformer Models") do, for Llama-family blocks (RMSNorm, rotary,
SwiGLU) under SDPA, which keeps no L x L attention matrix, checked tensor by tensor against
transformers' Llama (tests/test_plan.py). T = rows·L tokens, rows = 2·batch_size (chosen + rejected),
L = max_length, r / c = bytes of the residual stream / of compute (bf16 under autocast or FSDP's policy),
H hidden, q = heads·head_dim, I intermediate. Per token per block:
  c·(4q + L + 3I)  rotary q, K and V (repeated to q heads: a padding mask turns SDPA's GQA off), SDPA
                   output; the float mask SDPA makes from the boolean one; gate, silu, up outputs
  full fine-tune: + 16H (two RMSNorms: n, y, or fp32 copy, n, y; autocast over fp32: 8H + a bf16 copy
                   of y per projection, 5cH) + 2rH if r = 4 (residuals) + cI (down_proj's input)
  LoRA:           + 8H (norm inputs) + the adapters' inputs (bf16: one copy per adapter; fp32: shared)
and once per token: the final norm's 8H, the scored rows r·H, the boolean mask L bytes and rotary cos/sin.
Without checkpointing every block's tensors are held (the adapters run the decoder without a KV
cache); with it, r·H per block (its input) plus, in backward, one recomputed block. Backward adds r·H + 2cI
(3cI under LoRA) of gradients. Log-probs (lpo_speech.logps.linear_sequence_logps, S = rows, V vocab):
  stash path (S·V·H·4 <= SEQ_GRAD_STASH_BYTES): held S·V·H·4 + T·H·r (d sums / d weight, d hidden);
  transient: two fp32 chunks of min(SEQ_CHUNK_ELEMS // V, L) rows (+2 bytes bf16 logits), or one and
  a V·H fp32 product; recompute path: held T·8, transient two chunks of DEFAULT_CHUNK_ELEMS // V rows,
  the V·H fp32 weight gradient and T·H·r; LoRA (frozen head): T·H·r and the chunks.
The dynamic peak is the largest of three moments: the decoder's end, the log-prob pass, a block's
backward. "Fits" means total <= FIT_FRACTION of the GPU (the CUDA context, allocator fragmentation
and NCCL buffers are outside this count). GB means GiB (2**30 bytes) throughout.

ASR models (the adapters' own forward passes, lpo_speech.adapters.whisper and .audio_llm): a
micro-step holds batch_size audios (one per pair at most) of F encoder frames (max_source_positions:
1500 per 30 s window). Whisper-style layers (LayerNorm, multi-head attention, GELU MLP) keep per token
r·d (each norm's input) + the trained projections' inputs + c·d for each of q, k, v, the attention
output and out_proj's input + c·ffn twice (GELU's input and output); a trained encoder keeps that per
frame and layer, plus its convolutions over 2F mel frames. Whisper's decoder adds cross-attention:
per row and layer, keys and values over F frames (2·c·d per frame; under DDP projected once per audio
outside the decoder, so checkpointing keeps them; under FSDP per row, inside the sharded layer). An
audio LLM's language model is a Llama-family decoder over rows of L tokens, K = F/2 of them audio
(750 for Qwen2-Audio); only the L - K response tokens reach the vocabulary (linear_token_logps: the
rows' hidden states kept, two fp32 chunks of logits, the head's gradient when it trains). A frozen
encoder (model.freeze_encoder) has no gradients or optimizer state, stays whole on every GPU under
FSDP (lpo_speech.parallel.frozen_parts), and runs without gradients before the step (its peak: one
layer's working set); LoRA puts no adapter in it. Checked against the CPU allocator on tiny Whisper
and Qwen2-Audio models (tests/test_plan.py).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import asdict, is_dataclass

from lpo_speech.errors import UserError, short
from lpo_speech.logps import DEFAULT_CHUNK_ELEMS, SEQ_CHUNK_ELEMS, SEQ_GRAD_STASH_BYTES

GiB = 1 << 30
FIT_FRACTION = 0.9
_LLAMA3 = {"model_type": "llama", "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072}
# Codec LMs with their real configs. Llasa: Llama-3.2-1B / -3B / 3.1-8B bodies with 193,800 ids (128,256
# text + 65,536 XCodec2 + specials); Spark-TTS-0.5B: the Qwen2.5-0.5B body with 166,000 (BiCodec) ids.
PRESETS: dict[str, dict] = {
    "spark-0.5b": {"model_type": "qwen2", "vocab_size": 166000, "hidden_size": 896, "intermediate_size": 4864,
                   "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                   "tie_word_embeddings": True, "rope_theta": 1000000.0, "max_position_embeddings": 32768},
    "llasa-1b": {**_LLAMA3, "vocab_size": 193800, "hidden_size": 2048, "intermediate_size": 8192, "head_dim": 64,
                 "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "tie_word_embeddings": True},
    "llasa-3b": {**_LLAMA3, "vocab_size": 193800, "hidden_size": 3072, "intermediate_size": 8192, "head_dim": 128,
                 "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
                 "tie_word_embeddings": True},
    "llasa-8b": {**_LLAMA3, "vocab_size": 193800, "hidden_size": 4096, "intermediate_size": 14336, "head_dim": 128,
                 "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "tie_word_embeddings": False},
    # ASR models, as published (their config.json values; the rest are the transformers defaults).
    "whisper-large-v3": {"model_type": "whisper", "vocab_size": 51866, "num_mel_bins": 128, "d_model": 1280,
                         "encoder_layers": 32, "decoder_layers": 32, "encoder_attention_heads": 20,
                         "decoder_attention_heads": 20, "encoder_ffn_dim": 5120, "decoder_ffn_dim": 5120,
                         "max_source_positions": 1500, "max_target_positions": 448},
    "qwen2-audio-7b": {"model_type": "qwen2_audio", "audio_token_index": 151646,
                       "audio_config": {"model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "d_model": 1280,
                                        "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                                        "max_source_positions": 1500},
                       "text_config": {"model_type": "qwen2", "vocab_size": 156032, "hidden_size": 4096,
                                       "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                                       "num_key_value_heads": 32, "max_position_embeddings": 8192,
                                       "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False}},
}
TTS_PRESETS = ("spark-0.5b", "llasa-1b", "llasa-3b", "llasa-8b")
ROWS = [("master", "master weights (optimizer's)"), ("grads", "gradients"), ("optimizer", "AdamW states"),
        ("weights", "frozen weights"), ("reference", "reference model"), ("comm", "DDP buckets / FSDP grads"),
        ("copies", "bf16 compute copies"), ("activations", "activations"), ("logps", "log-prob working set"),
        ("total", "**total per GPU**")]
_COUNTS: dict[str, dict] = {}


def as_config(config):
    """A transformers config from a dict (with model_type) or a config object."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(config, PretrainedConfig):
        return config
    d = dict(config)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def lora_settings(lora) -> tuple[int, tuple[str, ...]] | None:
    """(r, target_modules) of a LoraSettings, a mapping or None."""
    if lora is None:
        return None
    d = asdict(lora) if is_dataclass(lora) else dict(lora)
    return int(d.get("r", 16)), tuple(d.get("target_modules") or ("q_proj", "k_proj", "v_proj", "o_proj"))


def model_kind(cfg) -> str:
    """Which adapter trains this config: seq2seq (Whisper), audio_llm (Qwen2-Audio) or causal (codec LMs)."""
    from lpo_speech.adapters.audio_llm import FAMILIES

    if getattr(cfg, "is_encoder_decoder", False):
        return "seq2seq"
    return "audio_llm" if cfg.model_type in FAMILIES else "causal"


def meta_model(cfg, freeze_encoder: bool = False):
    """The model training loads, built on the meta device, with its encoder frozen the way the adapters
    freeze it for `model.freeze_encoder` (Whisper's encoder, the audio LLM family's tower)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSpeechSeq2Seq

    from lpo_speech.adapters.audio_llm import FAMILIES

    encoder = None
    with torch.device("meta"):
        if model_kind(cfg) == "seq2seq":
            model = AutoModelForSpeechSeq2Seq.from_config(cfg)
            encoder = model.get_encoder()
        elif model_kind(cfg) == "audio_llm":
            family = FAMILIES[cfg.model_type]
            model = getattr(transformers, family.model_class)(cfg)
            encoder = family.tower(model)
        else:
            model = AutoModelForCausalLM.from_config(cfg)
    if freeze_encoder and encoder is not None:
        encoder.requires_grad_(False)
    return model


def count_params(config, lora=None, freeze_encoder: bool = False) -> dict:
    """Exact counts of the meta-device model: total, frozen (a frozen encoder, kept whole on every GPU),
    blocks (FSDP's units below the root, lpo_speech.parallel.fsdp_blocks), block (the largest), root
    (the rest, FSDP's root unit), matmul (unique nn.Linear weights that train), adapter (LoRA's trainable
    parameters, none inside a frozen encoder; else 0)."""
    from torch import nn

    from lpo_speech.parallel import fsdp_blocks, frozen_parts

    cfg, lk = as_config(config), lora_settings(lora)
    key = cfg.to_json_string() + repr(lk) + repr(freeze_encoder)
    if key not in _COUNTS:
        model = meta_model(cfg, freeze_encoder)
        unique = lambda ps: sum({id(p): p.numel() for p in ps}.values())  # noqa: E731  tied weights count once
        blocks = [unique(m.parameters()) for m in fsdp_blocks(model)]
        frozen = frozen_parts(model)
        total, held = unique(model.parameters()), sum(unique(m.parameters()) for _, m in frozen)
        _COUNTS[key] = {"total": total, "frozen": held, "blocks": len(blocks), "block": max(blocks, default=0),
                        "root": total - sum(blocks) - held,
                        "matmul": unique(p for x in model.modules() if isinstance(x, nn.Linear)
                                         for p in x.parameters() if p.requires_grad),
                        "adapter": _adapter_params(model, *lk, [name for name, _ in frozen]) if lk else 0}
    return _COUNTS[key]


def _adapter_params(model, r: int, targets: tuple[str, ...], exclude: list[str]) -> int:
    from types import SimpleNamespace

    from torch import nn

    try:  # peft decides which modules match (names, all-linear), with training's exclusions (lpo_speech.lora)
        from peft import get_peft_model

        from lpo_speech.lora import peft_config

        settings = SimpleNamespace(r=r, alpha=2 * r, dropout=0.0, target_modules=list(targets))
        with warnings.catch_warnings():  # peft's use of deprecated transformers names is not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="You have passed exclude_modules")
            warnings.filterwarnings("ignore", message=".*base_model_name_or_path")  # no base: nothing is saved
            peft_model = get_peft_model(model, peft_config(settings, "meta", exclude))
        return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    except Exception:  # by formula: r x (in + out) per matching Linear (all-linear: all but the head)
        head = model.get_output_embeddings()
        return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and m is not head
                   and not any(name.startswith(f"{x}.") for x in exclude)
                   and ("all-linear" in targets or name.rsplit(".", 1)[-1] in targets))


def plan(config, *, strategy: str = "ddp", world: int = 1, dtype: str = "bfloat16", master_dtype: str = "float32",
         lora=None, gradient_checkpointing: bool = False, batch_size: int = 4, max_length: int = 2048,
         reference_on_gpu: bool = False, cpu_offload: bool = False, reshard_after_forward: bool = True,
         chosen_only: bool = False, freeze_encoder: bool = False) -> dict:
    """Bytes per GPU of each component (formulas in the module docstring), the counts and the settings.
    dtype auto counts as bfloat16: every GPU this plans for (A100, H100 class) computes in it."""
    cfg, lk = as_config(config), lora_settings(lora)
    n = count_params(cfg, lora, freeze_encoder)
    fsdp = strategy == "fsdp"
    shard, bf16 = world if fsdp else 1, dtype in ("bfloat16", "auto")
    w, m = (2 if bf16 else 4), (2 if master_dtype == "bfloat16" else 4)
    P, Fz = n["total"], n["frozen"]  # a frozen encoder is never sharded: every GPU keeps it whole
    A = n["adapter"] if lk else P - Fz
    r = 2 if (bf16 and (lk or fsdp)) or m == 2 else 4  # dtype the weights compute in = residual stream's
    c = 2 if bf16 or m == 2 else 4
    sharded_frozen = (P - Fz) * w / shard if lk else 0
    b = {"master": A * m / shard, "grads": A * m / shard, "optimizer": 2 * A * m / shard,
         "weights": sharded_frozen + Fz * w, "reference": P * w / shard if reference_on_gpu and not lk else 0}
    if fsdp:
        b["copies"] = (P - Fz if not reshard_after_forward else n["root"] + 2 * n["block"]) * r
        b["comm"] = (0 if lk else n["root"] * r) + (A / max(n["blocks"], 1) if lk else n["block"]) * (r + 4)
    else:
        b["copies"] = 2 * (A if lk else n["matmul"]) if bf16 and m == 4 else 0
        b["comm"] = 0  # DDP with gradient_as_bucket_view: the buckets are the gradients
    host = 0.0
    if fsdp and cpu_offload:  # what FSDP shards goes to the host; a frozen encoder stays on the GPU
        host = b["master"] + b["grads"] + b["optimizer"] + sharded_frozen
        b.update(master=0, grads=0, optimizer=0, weights=Fz * w)
    notes: list[str] = []
    rows = (1 if chosen_only else 2) * batch_size
    dims = dict(r=r, c=c, w=w, lk=lk, ckpt=gradient_checkpointing, rows=rows, L=max_length, audios=batch_size,
                frozen=freeze_encoder)
    if model_kind(cfg) == "seq2seq":
        b["activations"], b["logps"], dyn = _seq2seq_dynamic(cfg, fsdp=fsdp, **dims)
    elif model_kind(cfg) == "audio_llm":
        b["activations"], b["logps"], dyn = _audio_llm_dynamic(cfg, **dims)
    else:
        b["activations"], b["logps"], dyn = _dynamic(cfg, r, c, lk, gradient_checkpointing, rows, max_length)
    if fsdp and not n["blocks"]:
        notes.append("train.strategy fsdp: this model names no transformer block class to shard by; training "
                     "refuses it (use ddp)")
    if model_kind(cfg) != "causal":
        notes.append(f"ASR: a micro-step holds {batch_size} audios (one per pair, at most) of "
                     f"{_frames(cfg)} encoder frames each (a 30 s window), beside {rows} rows of {max_length} tokens")
    b["total"] = sum(v for k, v in b.items() if k not in ("activations", "logps")) + dyn
    settings = dict(strategy=strategy, world=world, dtype="bfloat16" if bf16 else "float32",
                    master_dtype=master_dtype, lora=lora, gradient_checkpointing=gradient_checkpointing,
                    batch_size=batch_size, max_length=max_length, reference_on_gpu=reference_on_gpu,
                    cpu_offload=cpu_offload, reshard_after_forward=reshard_after_forward, chosen_only=chosen_only,
                    freeze_encoder=freeze_encoder)
    return {**b, "dynamic": dyn, "host": host, "params": P, "trainable": A, "counts": n, "notes": notes,
            "settings": settings}


def _dynamic(cfg, r: int, c: int, lk, ckpt: bool, rows: int, L: int) -> tuple[float, float, float]:
    """A causal LM: (activations, log-prob memory, dynamic peak), bytes; formulas in the module docstring."""
    T = rows * L
    held, backward = _llama_stack(cfg, r, c, lk, ckpt, T, L)
    logps = _sequence_logps(cfg.hidden_size, cfg.vocab_size, rows, L, T, r, c, lk)
    return max(held, backward), logps, max(held, held + logps, backward)


def _llama_stack(cfg, r: int, c: int, lk, ckpt: bool, T: int, L: int) -> tuple[float, float]:
    """(bytes held at the decoder's end, at a block's backward) for T tokens in rows of L through a
    Llama-family decoder (a codec LM, an audio LLM's language model)."""
    H, I, nl = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or H // heads
    q = heads * hd
    block = c * (4 * q + L + 3 * I)
    if lk is None:
        block += (16 * H if c == r or c == 4 else 8 * H + 5 * c * H) + (2 * r * H if r == 4 else 0) + c * I
    else:
        width = {"q_proj": H, "k_proj": H, "v_proj": H, "o_proj": q, "gate_proj": H, "up_proj": H, "down_proj": I}
        t = set(width) if "all-linear" in lk[1] else set(lk[1]) & set(width)
        if c == 4:  # fp32: an adapter saves the tensor its base layer reads (q/k/v and gate/up share one)
            qkv, gate_up = bool(t & {"q_proj", "k_proj", "v_proj"}), bool(t & {"gate_proj", "up_proj"})
            block += 8 * H + 4 * (H * qkv + H * gate_up + I * ("down_proj" in t))
        else:  # peft casts each adapter's input to fp32, autocast back to bf16: one saved copy per adapter
            block += 8 * H + c * sum(width[x] for x in t)
    final = 8 * H  # final norm's saved tensors and its output (the hidden the head reads)
    shared = T * L + T * 2 * hd * r  # the boolean padding mask and rotary cos/sin, shared by all blocks
    resid_in = 4 * H if r == 4 and lk is None else 0  # fp32 residuals are saved by the norm reading them
    if ckpt:
        held = T * (nl * r * H + resid_in + final) + shared
        recompute = T * (block - (r * H if resid_in else 0))  # recompute keeps no output
    else:
        held = T * (resid_in + nl * block + final) + shared
        recompute = 0
    # A block's backward, at its SwiGLU product's (measured): the final norm and rows are freed by then.
    backward = held - T * final + recompute + T * (r * H + (3 if lk else 2) * c * I)
    return held, backward


def _sequence_logps(H: int, V: int, rows: int, L: int, T: int, r: int, c: int, lk) -> float:
    """Bytes of lpo_speech.logps.linear_sequence_logps (the causal-LM adapter's log-probs) at its peak."""
    rows_h = T * H * r  # the scored rows (index_select of the final hidden)
    bf = 2 * (c == 2)  # bf16 logits made before their fp32 copy
    if lk is None and rows * V * H * 4 > SEQ_GRAD_STASH_BYTES:  # recompute path
        chunk = min(min(SEQ_CHUNK_ELEMS, DEFAULT_CHUNK_ELEMS) // V, T) * V
        kept, transient = T * 8, chunk * (8 + bf) + V * H * 4 + T * H * r
    else:
        chunk = min(SEQ_CHUNK_ELEMS // V, L) * V  # chunks never cross a sequence
        kept = T * H * r + (0 if lk else rows * V * H * 4)
        transient = max(chunk * (8 + bf), chunk * (4 + bf) + V * H * 4 * (lk is None), V * H * 4 + T * H * r)
    return rows_h + kept + transient


def _token_logps(H: int, V: int, N: int, r: int, c: int, head_trains: bool) -> float:
    """Bytes of lpo_speech.logps.linear_token_logps (the ASR adapters' log-probs) over N response tokens:
    their hidden rows, log-sum-exps and targets kept; in backward two fp32 chunks of logits, the
    head's fp32 gradient when it trains, and the rows' gradient."""
    chunk = min(DEFAULT_CHUNK_ELEMS // V, N) * V
    return N * H * r + N * 8 + chunk * (8 + 2 * (c == 2)) + V * H * 4 * head_trains + N * H * r


# ---------------------------------------------------------------------------------------- speech models
# Whisper-style layers (LayerNorm before attention and MLP, multi-head attention, GELU MLP): the bytes
# autograd keeps per token (encoder frame or decoder token), counted as for the Llama blocks above. A
# projection keeps its input when its weight trains (or its LoRA adapter does): one fp32 copy shared by
# q/k/v in fp32, one bf16 cast per projection under autocast (LayerNorm computes in fp32 there).
# t: the trained projections' names (None: every weight trains).

def _attention(d: int, r: int, c: int, t, cross: bool) -> float:
    proj = ("q_proj",) if cross else ("q_proj", "k_proj", "v_proj")
    reads = [x for x in proj if t is None or x in t]
    inputs = (4 * d if reads else 0) if c == 4 else c * d * len(reads)
    # norm input; projection inputs; q (k, v) copies and the attention output (SDPA keeps them); out_proj's input
    return r * d + inputs + c * d * len(proj) + c * d + (c * d if t is None or "out_proj" in t else 0)


def _mlp(d: int, ffn: int, r: int, c: int, t) -> float:
    fc1, fc2 = t is None or "fc1" in t, t is None or "fc2" in t
    # norm input; fc1's input; GELU's input (fc1's output); fc2's input (GELU's output)
    return r * d + ((4 * d if c == 4 else c * d) if fc1 else 0) + c * ffn + (c * ffn if fc2 else 0)


def _names(lk) -> set[str] | None:
    if lk is None:
        return None
    names = {"q_proj", "k_proj", "v_proj", "out_proj", "o_proj", "fc1", "fc2"}
    return names if "all-linear" in lk[1] else set(lk[1]) & names


def _encoder(d: int, ffn: int, layers: int, mels: int, F: int, r: int, c: int, t, ckpt: bool) -> tuple[float, float]:
    """A trained Whisper-style encoder over one audio of F frames (2F mel frames): (bytes held until its
    backward, bytes one layer adds when recomputed under checkpointing)."""
    layer = _attention(d, r, c, t, cross=False) + _mlp(d, ffn, r, c, t)
    # conv1's input and output, GELU's output (conv2's input), conv2's output; the residual; the final norm
    front = c * 2 * F * (mels + 2 * d) + F * (c * d + r * d) + F * (r * d + 4 * d)
    return (front + F * layers * (r * d if ckpt else layer)), (F * layer if ckpt else 0)


def _frozen_encoder(d: int, ffn: int, F: int, w: int, audios: int) -> float:
    """A frozen encoder runs without gradients (its states computed once per audio before the step):
    its largest moment is one layer's working set, or its convolutions over 2F mel frames."""
    return audios * w * max(F * (4 * d + 2 * ffn), 2 * 2 * F * d)


def _frames(cfg) -> int:
    audio = getattr(cfg, "audio_config", cfg)
    return audio.max_source_positions


def _seq2seq_dynamic(cfg, *, r: int, c: int, w: int, lk, ckpt: bool, rows: int, L: int, audios: int, frozen: bool,
                     fsdp: bool) -> tuple[float, float, float]:
    """Whisper (lpo_speech.adapters.whisper): the encoder once per audio, the decoder over chosen and
    rejected rows, each decoder layer's cross-attention keys and values per row over F encoder frames."""
    d, F, t = cfg.d_model, cfg.max_source_positions, _names(lk)
    T, D, ffn = rows * L, cfg.decoder_layers, cfg.decoder_ffn_dim
    layer = _attention(d, r, c, t, cross=False) + _attention(d, r, c, t, cross=True) + _mlp(d, ffn, r, c, t)
    # Cross keys and values: a copy per row and layer (SDPA keeps them); under autocast k_proj and v_proj
    # each keep a bf16 cast of their input, per row under FSDP (projected inside the sharded layer), per
    # audio under DDP (projected once per audio, outside the decoder, so checkpointing keeps them).
    casts = 0 if c == 4 else c * d * sum(1 for x in ("k_proj", "v_proj") if t is None or x in t)
    cross = F * (rows * 2 * c * d + (rows if fsdp else audios) * casts)
    states = audios * F * d * 4 + (rows * F * d * 4 if fsdp else 0)  # encoder output; under FSDP, per row too
    final = T * (r * d + 4 * d)  # the final norm's input and output (the hidden the head reads)
    if ckpt:
        dec = T * D * r * d + (0 if fsdp else D * cross) + final
        recompute = T * layer + (cross if fsdp else 0)
    else:
        dec, recompute = T * D * layer + D * cross + final, 0
    transient = 0.0
    if frozen:
        enc, enc_recompute = 0.0, 0.0
        transient = _frozen_encoder(d, cfg.encoder_ffn_dim, F, w, audios)
    else:
        per_audio, one = _encoder(d, cfg.encoder_ffn_dim, cfg.encoder_layers, cfg.num_mel_bins, F, r, c, t, ckpt)
        enc, enc_recompute = audios * per_audio, audios * one
    held = enc + states + dec
    # A decoder layer's backward: at its MLP (two GELU-sized gradients), then at its cross-attention: the
    # gradients of every row's keys and values (under DDP the shared keys and values stay held beside
    # them, and their per-audio sums follow; under FSDP the row's copies are freed as their gradients
    # appear, and a trained encoder's per-row states get theirs).
    grads = F * 2 * c * d * (rows + audios) if not fsdp else (0 if frozen else F * rows * 2 * d * 4)
    backward = held - final + recompute + max(T * (r * d + 2 * c * ffn), grads)
    # The encoder's backward comes after the decoder's: its final norm has been through backward, the
    # gradient of its output is held; a layer's MLP backward holds one more GELU-sized gradient.
    enc_backward = enc + enc_recompute + audios * F * c * cfg.encoder_ffn_dim
    logps = _token_logps(d, cfg.vocab_size, T, r, c, head_trains=lk is None)  # Whisper's prompt is 3-4 tokens
    return (max(held, backward, enc_backward, transient), logps,
            max(held + logps, backward, enc_backward, transient))


def _audio_llm_dynamic(cfg, *, r: int, c: int, w: int, lk, ckpt: bool, rows: int, L: int, audios: int,
                       frozen: bool) -> tuple[float, float, float]:
    """An audio LLM (lpo_speech.adapters.audio_llm): the tower once per audio over F frames, pooled to K
    audio tokens that sit in every row's L tokens; the language model over the rows; only the response
    tokens (L - K at most) reach the vocabulary."""
    from lpo_speech.adapters.audio_llm import FAMILIES

    text, audio = cfg.text_config, cfg.audio_config
    K, F, d = FAMILIES[cfg.model_type].tower_frames(cfg), audio.max_source_positions, audio.d_model
    T, H = rows * L, text.hidden_size
    held, backward = _llama_stack(text, r, c, lk, ckpt, T, L)
    # The tower's states for the batch's audios (fp32) and the projected frames the rows read.
    tokens = audios * K * (d * 4 + H * c)
    transient = 0.0
    if frozen:
        enc = enc_backward = 0.0
        transient = _frozen_encoder(d, audio.encoder_ffn_dim, F, w, audios)
    else:
        t = _names(lk)
        per_audio, one = _encoder(d, audio.encoder_ffn_dim, audio.encoder_layers, audio.num_mel_bins, F, r, c, t,
                                  ckpt)
        enc = audios * (per_audio + F * F)  # + the tower's padding mask
        enc_backward = enc + tokens + audios * (one + F * c * audio.encoder_ffn_dim)  # as Whisper's
    held, backward = held + enc + tokens, backward + enc + tokens
    logps = _token_logps(H, text.vocab_size, rows * max(L - K, 1), r, c, head_trains=lk is None)
    return (max(held, backward, enc_backward, transient), logps,
            max(held + logps, backward, enc_backward, transient))


def fits(p: dict, gpu_gb: float) -> bool:
    return p["total"] <= FIT_FRACTION * gpu_gb * GiB


KEYS = {"gradient_checkpointing": "model.gradient_checkpointing", "strategy": "train.strategy",
        "batch_size": "train.batch_size", "lora": "model.lora", "cpu_offload": "train.fsdp_cpu_offload",
        "freeze_encoder": "model.freeze_encoder"}


def suggestions(config, settings: dict, gpu_gb: float, limit: int = 3) -> list[str]:
    """Recipe changes (key=value, cheapest first) under which the plan fits."""
    s, out, bs = settings, [], settings["batch_size"]
    tries = [{"gradient_checkpointing": True}] + ([{"strategy": "fsdp"}] if s["world"] > 1 else [])
    tries += [{"gradient_checkpointing": True, "batch_size": k} for k in (bs // 2, bs // 4, 1) if 1 <= k < bs]
    tries += [{"strategy": "fsdp", "gradient_checkpointing": True}] if s["world"] > 1 else []
    if model_kind(as_config(config)) != "causal":  # ASR: the encoder's activations and state go
        tries += [{"freeze_encoder": True, "gradient_checkpointing": True}]
    tries += [{"lora": {"r": 16}, "gradient_checkpointing": True}]
    tries += [{"strategy": "fsdp", "cpu_offload": True, "gradient_checkpointing": True}] if s["world"] > 1 else []
    fitted: list[dict] = []
    for t in tries:
        changed = {k: v for k, v in t.items() if s.get(k) != v and not (k == "lora" and s.get("lora"))}
        if not changed or any(f.items() <= changed.items() for f in fitted):  # nothing new, or a smaller one fits
            continue
        p = plan(config, **{**s, **t})
        if fits(p, gpu_gb) and len(fitted) < limit:
            fitted.append(changed)
            text = " ".join(f"{KEYS[k]}={_yaml(v)}" for k, v in changed.items())
            out.append(f"{text} ({p['total'] / GiB:.1f} GB)")
    return out


def _yaml(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {x}" for k, x in v.items()) + "}"
    return str(v).lower() if isinstance(v, bool) else str(v)


def format_plan(plans: list[tuple[str, dict]], gpu_gb: float, config=None) -> str:
    """A Markdown table (one column per GPU setup), then a verdict per setup with changes that fit."""
    lines = ["| component | " + " | ".join(label for label, _ in plans) + " |", "|---|" + "---:|" * len(plans)]
    for key, label in ROWS + [("host", "host memory (offloaded)")]:
        if key == "total" or any(p[key] for _, p in plans):
            lines.append(f"| {label} | " + " | ".join(f"{p[key] / GiB:.2f} GB" for _, p in plans) + " |")
    lines.append("")
    for label, p in plans:
        ok = fits(p, gpu_gb)
        line = f"* {label}: {'fits' if ok else 'does not fit'} ({p['total'] / GiB:.1f} GB per GPU"
        line += f", the limit is {FIT_FRACTION:.0%} of {gpu_gb:g} GB)"
        if not ok and config is not None:
            alts = suggestions(config, p["settings"], gpu_gb)
            line += ("; fits with " + "; or ".join(alts)) if alts else "; none of the usual changes fits"
        lines.append(line)
    return "\n".join(lines + [f"* {note}" for note in sorted({n for _, p in plans for n in p["notes"]})])


def recipe_plan(recipe, *, preset: str | None = None, gpus: list[str] | None = None,
                gpu_gb: str | None = None) -> str:
    """`lpo-speech train RECIPE --plan`: the recipe's plan on the visible GPUs (else `gpus` x `gpu_gb`)."""
    counts = [_positive(g, "--plan-gpus", int) for g in gpus or []]
    gb = _positive(gpu_gb, "--plan-gpu-gb", float) if gpu_gb is not None else None
    mc, t = recipe.model, recipe.train
    if preset is not None and preset not in PRESETS:
        raise UserError(f"--plan-model: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    config = PRESETS[preset] if preset else _read_config(mc.path)
    source = f"preset {preset}, standing in for model.path {mc.path}" if preset else f"{mc.path}/config.json"
    import torch

    if not counts and torch.cuda.is_available():
        counts = [torch.cuda.device_count()]
        gb = gb or torch.cuda.get_device_properties(0).total_memory / GiB
    counts, gb = counts or [1, 8], gb or 80.0
    common = recipe_settings(recipe)
    dtype, sft = common["dtype"], common["chosen_only"]
    plans = [(f"{k} x {gb:g} GB", plan(config, world=k, **common)) for k in counts]
    p = plans[0][1]
    head = (f"memory plan ({source}): {p['params'] / 1e9:.3f}B parameters, {p['trainable'] / 1e6:.1f}M trained; "
            f"{t.strategy}, dtype {dtype}, master {t.master_dtype}, batch {t.batch_size} pairs x "
            f"{1 if sft else 2} x {recipe.data.max_length} tokens, gradient checkpointing "
            f"{'on' if mc.gradient_checkpointing else 'off'}{', encoder frozen' if mc.freeze_encoder else ''}. "
            "No weights loaded, no run folder written.")
    return head + "\n\n" + format_plan(plans, gb, config)


def recipe_settings(recipe) -> dict:
    """plan()'s settings from a training recipe (all but the GPU count)."""
    mc, t = recipe.model, recipe.train
    dtype = mc.dtype if mc.dtype != "auto" else ("float32" if recipe.runtime.device == "cpu" else "bfloat16")
    sft = recipe.loss.type == "sft"
    return dict(strategy=t.strategy, dtype=dtype, master_dtype=t.master_dtype, lora=mc.lora,
                gradient_checkpointing=mc.gradient_checkpointing, batch_size=t.batch_size,
                max_length=recipe.data.max_length, cpu_offload=t.fsdp_cpu_offload, chosen_only=sft,
                reshard_after_forward=t.fsdp_reshard_after_forward,
                reference_on_gpu=recipe.reference.source == "model" and not sft, freeze_encoder=mc.freeze_encoder)


MAX_PLAN_GPUS = 1 << 20  # a GPU count past this is a typo, not a cluster


def _positive(text, flag: str, kind):
    """A --plan-gpus / --plan-gpu-gb value: a number > 0 that is finite (inf GB would fit anything)."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not value > 0:  # not a number, nan, 0 or less
        raise UserError(f"{flag}: expected {'an integer' if kind is int else 'a number'} > 0, got {short(text)}")
    if value > MAX_PLAN_GPUS if kind is int else not math.isfinite(value):  # (a huge int has no float)
        bound = f"at most {MAX_PLAN_GPUS}" if kind is int else "a finite number"
        raise UserError(f"{flag}: expected {bound}, got {short(text)}")
    return value


def _read_config(path: str):
    from pathlib import Path

    from transformers import AutoConfig

    from lpo_speech.hub import file_not_folder, hub_reachable

    hint = f"pass --plan-model PRESET to plan with a stand-in ({', '.join(PRESETS)})"
    if file_not_folder(path):
        raise UserError(f"model.path: {path!r} is a file; expected a model folder (save_pretrained); {hint}")
    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise UserError(f"model.path: {path}/config.json: no such file; {hint}")
    if not Path(path).exists() and not hub_reachable(path, "config"):  # asked first: transformers retries for ~20 s
        raise UserError(f"model.path: no config.json for {path!r}: not a local folder, and as a hub model it "
                        f"cannot be reached (no network, or no such repository) and is not cached; {hint}")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"model.path: cannot read the config.json of {path!r} ({str(e).splitlines()[0]}); "
                        f"{hint}") from None


def docs_table(batch_size: int = 4, max_length: int = 2048, gpu_gb: float = 80.0) -> str:
    """The design doc's table: GB per GPU for each preset and setup (✓: fits on one gpu_gb GPU); act. peak:
    activations + log-probs at their peak under DDP bf16."""
    setups = [("DDP fp32", 1, dict(dtype="float32")), ("DDP bf16", 1, {}),
              ("pure bf16", 1, dict(master_dtype="bfloat16")), ("LoRA r16", 1, dict(lora={"r": 16})),
              ("DDP bf16 x8", 8, {}), ("FSDP x8", 8, dict(strategy="fsdp")),
              ("FSDP x8 offload", 8, dict(strategy="fsdp", cpu_offload=True))]
    lines = ["| model | params | ckpt | act. peak | " + " | ".join(s for s, _, _ in setups) + " |",
             "|---|---:|---|---:|" + "---:|" * len(setups)]
    for name, config in ((k, PRESETS[k]) for k in TTS_PRESETS):
        for ckpt in (False, True):
            ps = [plan(config, world=k, gradient_checkpointing=ckpt, batch_size=batch_size,
                       max_length=max_length, **kw) for _, k, kw in setups]
            cells = [f"{p['total'] / GiB:.1f} {'✓' if fits(p, gpu_gb) else '✗'}" for p in ps]
            head = f"| {name} | {ps[0]['params'] / 1e9:.2f}B | {'on' if ckpt else 'off'} | "
            head += f"{ps[1]['dynamic'] / GiB:.1f} | "
            lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


# docs/cluster.md: each track's hub recipe, planned with the published shapes of the model it names.
CLUSTER = [("Llasa-1B", "recipes/tts/emotion.yaml", "llasa-1b"),
           ("Whisper-large-v3", "recipes/asr/whisper.yaml", "whisper-large-v3"),
           ("Qwen2-Audio-7B + LoRA", "recipes/asr/qwen2-audio.yaml", "qwen2-audio-7b")]


def cluster_table(gpu_gb: float = 80.0) -> str:
    """docs/cluster.md's table: GB per GPU of each hub recipe as written, on one GPU and on eight (DDP and
    FSDP), by component."""
    from lpo_speech.recipe import load_train_recipe

    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]  # the recipes beside the package (an editable install)
    lines = ["| model (recipe) | GPUs | trained weights, gradients, AdamW | frozen weights | compute copies, "
             "FSDP gathers | activations + log-probs | total per GPU |", "|---|---|---:|---:|---:|---:|---:|"]
    for label, path, preset in CLUSTER:
        settings = recipe_settings(load_train_recipe(repo / path))
        for world, strategy in ((1, "ddp"), (8, "ddp"), (8, "fsdp")):
            p = plan(PRESETS[preset], **{**settings, "world": world, "strategy": strategy})
            cells = [p["master"] + p["grads"] + p["optimizer"], p["weights"] + p["reference"],
                     p["copies"] + p["comm"], p["dynamic"], p["total"]]
            text = " | ".join(f"{v / GiB:.1f}" for v in cells)
            lines.append(f"| {label} (`{path}`) | {world} x {gpu_gb:g} GB, {strategy} | {text} "
                         f"{'✓' if fits(p, gpu_gb) else '✗'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lpo_speech.plan", description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="store_true", help="the design doc's table over the presets")
    ap.add_argument("--cluster", action="store_true", help="docs/cluster.md's table: each track's hub recipe")
    ap.add_argument("--batch-size", type=int, default=4, help="pairs per GPU per micro-step")
    ap.add_argument("--max-length", type=int, default=2048, help="tokens per sequence")
    args = ap.parse_args(argv)
    if args.cluster:
        print(cluster_table())
    else:
        print(docs_table(args.batch_size, args.max_length) if args.table else "presets: " + ", ".join(PRESETS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
