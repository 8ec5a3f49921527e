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
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import asdict, is_dataclass

from lpo_speech.errors import UserError
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
}
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


def count_params(config, lora=None) -> dict:
    """Exact counts of the meta-device model: total, root (outside the blocks FSDP wraps), block (the
    largest), blocks, matmul (unique nn.Linear weights), adapter (LoRA's trainable parameters, else 0)."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM, AutoModelForSpeechSeq2Seq

    cfg, lk = as_config(config), lora_settings(lora)
    key = cfg.to_json_string() + repr(lk)
    if key not in _COUNTS:
        with torch.device("meta"):
            auto = AutoModelForSpeechSeq2Seq if getattr(cfg, "is_encoder_decoder", False) else AutoModelForCausalLM
            model = auto.from_config(cfg)
        unique = lambda ps: sum({id(p): p.numel() for p in ps}.values())  # noqa: E731  tied weights count once
        names = set(getattr(model, "_no_split_modules", None) or [])
        blocks = [unique(m.parameters()) for m in model.modules() if type(m).__name__ in names]
        total = unique(model.parameters())
        _COUNTS[key] = {"total": total, "blocks": len(blocks), "block": max(blocks, default=0),
                        "root": total - sum(blocks), "adapter": _adapter_params(model, *lk) if lk else 0,
                        "matmul": unique(p for x in model.modules() if isinstance(x, nn.Linear)
                                         for p in x.parameters())}
    return _COUNTS[key]


def _adapter_params(model, r: int, targets: tuple[str, ...]) -> int:
    from torch import nn

    try:  # peft decides which modules match (names, all-linear), as in training
        from peft import LoraConfig, get_peft_model

        tm = "all-linear" if list(targets) == ["all-linear"] else list(targets)
        with warnings.catch_warnings():  # peft's use of deprecated transformers names is not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=tm))
        return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    except Exception:  # by formula: r x (in + out) per matching Linear (all-linear: all but the head)
        head = model.get_output_embeddings()
        return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and m is not head
                   and ("all-linear" in targets or name.rsplit(".", 1)[-1] in targets))


def plan(config, *, strategy: str = "ddp", world: int = 1, dtype: str = "bfloat16", master_dtype: str = "float32",
         lora=None, gradient_checkpointing: bool = False, batch_size: int = 4, max_length: int = 2048,
         reference_on_gpu: bool = False, cpu_offload: bool = False, reshard_after_forward: bool = True,
         chosen_only: bool = False) -> dict:
    """Bytes per GPU of each component (formulas in the module docstring), the counts and the settings.
    dtype auto counts as bfloat16: every GPU this plans for (A100, H100 class) computes in it."""
    cfg, lk = as_config(config), lora_settings(lora)
    n = count_params(cfg, lora)
    fsdp = strategy == "fsdp"
    shard, bf16 = world if fsdp else 1, dtype in ("bfloat16", "auto")
    w, m = (2 if bf16 else 4), (2 if master_dtype == "bfloat16" else 4)
    P, A = n["total"], (n["adapter"] if lk else n["total"])
    r = 2 if (bf16 and (lk or fsdp)) or m == 2 else 4  # dtype the weights compute in = residual stream's
    c = 2 if bf16 or m == 2 else 4
    b = {"master": A * m / shard, "grads": A * m / shard, "optimizer": 2 * A * m / shard,
         "weights": P * w / shard if lk else 0, "reference": P * w / shard if reference_on_gpu and not lk else 0}
    if fsdp:
        b["copies"] = (P if not reshard_after_forward else n["root"] + 2 * n["block"]) * r
        b["comm"] = (0 if lk else n["root"] * r) + (A / max(n["blocks"], 1) if lk else n["block"]) * (r + 4)
    else:
        b["copies"] = 2 * (A if lk else n["matmul"]) if bf16 and m == 4 else 0
        b["comm"] = 0  # DDP with gradient_as_bucket_view: the buckets are the gradients
    host = 0.0
    if fsdp and cpu_offload:
        host = sum(b[k] for k in ("master", "grads", "optimizer", "weights"))
        b.update(master=0, grads=0, optimizer=0, weights=0)
    notes: list[str] = []
    if getattr(cfg, "is_encoder_decoder", False):
        b["activations"] = b["logps"] = dyn = 0
        notes.append("activations and log-probs: not modeled for encoder-decoder models (whisper), and every "
                     "weight counts as trained (freeze_encoder is not modeled)")
    else:
        rows = (1 if chosen_only else 2) * batch_size
        b["activations"], b["logps"], dyn = _dynamic(cfg, r, c, lk, gradient_checkpointing, rows, max_length)
    b["total"] = sum(v for k, v in b.items() if k not in ("activations", "logps")) + dyn
    settings = dict(strategy=strategy, world=world, dtype="bfloat16" if bf16 else "float32",
                    master_dtype=master_dtype, lora=lora, gradient_checkpointing=gradient_checkpointing,
                    batch_size=batch_size, max_length=max_length, reference_on_gpu=reference_on_gpu,
                    cpu_offload=cpu_offload, reshard_after_forward=reshard_after_forward, chosen_only=chosen_only)
    return {**b, "dynamic": dyn, "host": host, "params": P, "trainable": A, "counts": n, "notes": notes,
            "settings": settings}


def _dynamic(cfg, r: int, c: int, lk, ckpt: bool, rows: int, L: int) -> tuple[float, float, float]:
    """(activations, log-prob memory, dynamic peak), bytes; formulas in the module docstring."""
    H, I, V, nl = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or H // heads
    q, T = heads * hd, rows * L
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
        decoder_end, recompute = held, T * (block - (r * H if resid_in else 0))  # recompute keeps no output
    else:
        held = T * (resid_in + nl * block + final) + shared
        decoder_end, recompute = held, 0
    rows_h = T * H * r  # the scored rows (index_select of the final hidden)
    bf = 2 * (c == 2)  # bf16 logits made before their fp32 copy
    if lk is None and rows * V * H * 4 > SEQ_GRAD_STASH_BYTES:  # recompute path
        chunk = min(min(SEQ_CHUNK_ELEMS, DEFAULT_CHUNK_ELEMS) // V, T) * V
        kept, transient = T * 8, chunk * (8 + bf) + V * H * 4 + T * H * r
    else:
        chunk = min(SEQ_CHUNK_ELEMS // V, L) * V  # chunks never cross a sequence
        kept = T * H * r + (0 if lk else rows * V * H * 4)
        transient = max(chunk * (8 + bf), chunk * (4 + bf) + V * H * 4 * (lk is None), V * H * 4 + T * H * r)
    logps = rows_h + kept + transient
    # A block's backward, at its SwiGLU product's (measured): the final norm and rows are freed by then.
    backward = held - T * final + recompute + T * (r * H + (3 if lk else 2) * c * I)
    return max(decoder_end, backward), logps, max(decoder_end, held + logps, backward)


def fits(p: dict, gpu_gb: float) -> bool:
    return p["total"] <= FIT_FRACTION * gpu_gb * GiB


KEYS = {"gradient_checkpointing": "model.gradient_checkpointing", "strategy": "train.strategy",
        "batch_size": "train.batch_size", "lora": "model.lora", "cpu_offload": "train.fsdp_cpu_offload"}


def suggestions(config, settings: dict, gpu_gb: float, limit: int = 3) -> list[str]:
    """Recipe changes (key=value, cheapest first) under which the plan fits."""
    s, out, bs = settings, [], settings["batch_size"]
    tries = [{"gradient_checkpointing": True}] + ([{"strategy": "fsdp"}] if s["world"] > 1 else [])
    tries += [{"gradient_checkpointing": True, "batch_size": k} for k in (bs // 2, bs // 4, 1) if 1 <= k < bs]
    tries += [{"strategy": "fsdp", "gradient_checkpointing": True}] if s["world"] > 1 else []
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
    dtype = mc.dtype if mc.dtype != "auto" else ("float32" if recipe.runtime.device == "cpu" else "bfloat16")
    sft = recipe.loss.type == "sft"
    common = dict(strategy=t.strategy, dtype=dtype, master_dtype=t.master_dtype, lora=mc.lora,
                  gradient_checkpointing=mc.gradient_checkpointing, batch_size=t.batch_size,
                  max_length=recipe.data.max_length, cpu_offload=t.fsdp_cpu_offload, chosen_only=sft,
                  reshard_after_forward=t.fsdp_reshard_after_forward,
                  reference_on_gpu=recipe.reference.source == "model" and not sft)
    plans = [(f"{k} x {gb:g} GB", plan(config, world=k, **common)) for k in counts]
    p = plans[0][1]
    head = (f"memory plan ({source}): {p['params'] / 1e9:.3f}B parameters, {p['trainable'] / 1e6:.1f}M trained; "
            f"{t.strategy}, dtype {dtype}, master {t.master_dtype}, batch {t.batch_size} pairs x "
            f"{1 if sft else 2} x {recipe.data.max_length} tokens, gradient checkpointing "
            f"{'on' if mc.gradient_checkpointing else 'off'}. No weights loaded, no run folder written.")
    return head + "\n\n" + format_plan(plans, gb, config)


def _positive(text, flag: str, kind):
    try:
        if (value := kind(text)) > 0:
            return value
    except (TypeError, ValueError):
        pass
    raise UserError(f"{flag}: expected a number > 0, got {text!r}")


def _read_config(path: str):
    from pathlib import Path

    from transformers import AutoConfig

    from lpo_speech.hub import hub_reachable

    hint = f"pass --plan-model PRESET to plan with a stand-in ({', '.join(PRESETS)})"
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
    for name, config in PRESETS.items():
        for ckpt in (False, True):
            ps = [plan(config, world=k, gradient_checkpointing=ckpt, batch_size=batch_size,
                       max_length=max_length, **kw) for _, k, kw in setups]
            cells = [f"{p['total'] / GiB:.1f} {'✓' if fits(p, gpu_gb) else '✗'}" for p in ps]
            head = f"| {name} | {ps[0]['params'] / 1e9:.2f}B | {'on' if ckpt else 'off'} | "
            head += f"{ps[1]['dynamic'] / GiB:.1f} | "
            lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lpo_speech.plan", description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="store_true", help="the design doc's table over the presets")
    ap.add_argument("--batch-size", type=int, default=4, help="pairs per GPU per micro-step")
    ap.add_argument("--max-length", type=int, default=2048, help="tokens per sequence")
    args = ap.parse_args(argv)
    print(docs_table(args.batch_size, args.max_length) if args.table else "presets: " + ", ".join(PRESETS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
