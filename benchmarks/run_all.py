"""Side-by-side speed and memory: lpo-speech's trainer vs TRL's DPOTrainer, plus candidate sampling.

One invocation, one machine. A `prepare` child builds a random-init Llama at codec-LM scale, random
token pairs (every sequence prompt + response tokens long, the response ending in EOS) and their
reference log-probs (with `lpo_speech.reflogps`, the real `ref-logps` stage); the work folder is
cached by configuration. Then each trainer runs in its own child process on the same pairs, batch,
precision and precomputed reference log-probs:

  trl          TRL DPOTrainer, loss_type sigmoid (fp32 on CPU: bf16 and gradient checkpointing off)
  trl-liger    the same with Liger kernels (`use_liger_kernel`, and `use_liger_loss` where this TRL has it:
               Triton kernels and the chunked fused-linear DPO loss); needs liger-kernel and a CUDA GPU
  lpo-sigmoid  lpo_speech.trainer.train, loss.type sigmoid (same beta, summed log-probs)
  lpo-ste      lpo_speech.trainer.train, loss.type lpo-ste (length-averaged log-probs, its default)

Each child reports seconds per optimizer step (after `--warmup` steps) and its peak memory: RSS high
water mark (ru_maxrss, the whole process: imports, model, data, steps) on CPU, torch.cuda max
allocated on GPU. A `sampling` child measures lpo_speech.tts.sampling: N candidates per prompt decoded
together with a KV cache vs one candidate at a time. Results go to benchmarks/results/run_all-*.json
and a Markdown table is printed.

TRL is a benchmark-only extra:  pip install trl==1.16.0  (into the project venv; `make bench` does
it), and liger-kernel==0.8.5 for the trl-liger row (GPU only). Without them those rows are skipped with
a note. The JSON is rewritten after every child (`"partial": true` until the last), so a run cut short
keeps the rows it finished.

  python benchmarks/run_all.py                       # CPU preset (about 10 minutes on 2 cores)
  python benchmarks/run_all.py --device cuda --dtype bf16 --preset gpu-0.5b --peak-tflops 989
  python benchmarks/run_all.py --preset tiny --steps 1 # seconds: the smoke test

Timings on a shared machine are noisy: repeat the run and compare medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Llama configurations. cpu: the codec-LM configuration (vocab 65,536, hidden 256, 4 layers);
# gpu-0.5b: about 0.47B parameters (Qwen2.5-0.5B-like body, codec vocabulary); tiny: the smoke test.
PRESETS = {
    "cpu": dict(vocab=65536, hidden=256, intermediate=1024, layers=4, heads=4, kv_heads=4,
                prompt_len=64, response_len=960, batch=2, pairs=8),
    "gpu-0.5b": dict(vocab=65536, hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2,
                     prompt_len=128, response_len=1920, batch=4, pairs=64),
    "tiny": dict(vocab=512, hidden=32, intermediate=64, layers=2, heads=4, kv_heads=2,
                 prompt_len=8, response_len=24, batch=2, pairs=4),
}
TRAINERS = ("trl", "trl-liger", "lpo-sigmoid", "lpo-ste")
BETA = 0.1  # DPO beta, TRL's default
LR = 1e-6
PAD, EOS = 0, 1


# ----------------------------------------------------------------------------------------------- utils

def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_calls(owner, name: str, out: list[float]) -> None:
    """Instrument `owner.name` to append each call's wall time to `out` (CPU phase breakdown)."""
    orig = getattr(owner, name)

    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        result = orig(*args, **kwargs)
        out.append(time.perf_counter() - t0)
        return result

    setattr(owner, name, wrapped)


def config_key(a) -> str:
    keys = ("vocab", "hidden", "intermediate", "layers", "heads", "kv_heads", "prompt_len", "response_len", "pairs",
            "seed")
    return hashlib.sha1(json.dumps({k: getattr(a, k) for k in keys} | {"v": 2}).encode()).hexdigest()[:10]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        desc += f", {torch.cuda.get_device_name(0)}"
    return desc


def model_flops_per_step(a) -> float:
    """Training FLOPs of one optimizer step by the usual count (6 x parameters x tokens for the body and
    the output projection at every position, plus 12 x layers x hidden x length x tokens for attention);
    both trainers get the same count, so MFU compares like with like."""
    head_dim = a.hidden // a.heads
    attn = a.hidden * a.heads * head_dim * 2 + a.hidden * a.kv_heads * head_dim * 2
    body = a.layers * (attn + 3 * a.hidden * a.intermediate)
    seq = a.prompt_len + a.response_len
    tokens = 2 * a.batch * seq
    return 6 * (body + a.vocab * a.hidden) * tokens + 12 * a.layers * a.hidden * seq * tokens


# ----------------------------------------------------------------------------------------------- children

def child_prepare(a, work: Path) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lpo_speech.recipe import DataConfig, LossConfig, ModelConfig, RuntimeConfig, TrainConfig, TrainRecipe
    from lpo_speech.reflogps import compute_ref_logps

    torch.manual_seed(a.seed)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=max(4096, a.prompt_len + a.response_len), pad_token_id=PAD,
                      eos_token_id=EOS, bos_token_id=None, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(work / "model")
    rng = random.Random(a.seed)
    rand = lambda k: [rng.randrange(2, a.vocab) for _ in range(k)]  # noqa: E731
    with (work / "pairs.jsonl").open("w") as f:
        for i in range(a.pairs):
            f.write(json.dumps({"id": f"p{i}", "prompt_tokens": rand(a.prompt_len),
                                "chosen_tokens": rand(a.response_len - 1) + [EOS],
                                "rejected_tokens": rand(a.response_len - 1) + [EOS]}) + "\n")
    recipe = TrainRecipe(model=ModelConfig(path=str(work / "model"), dtype=_dtype(a)),
                         data=DataConfig(pairs=str(work / "pairs.jsonl")),
                         train=TrainConfig(out_dir=str(work / "unused")), runtime=RuntimeConfig(device=a.device),
                         loss=LossConfig(type="sigmoid", average_logps=False))
    compute_ref_logps(recipe, work / "pairs.jsonl", work / "pairs_ref_sum.jsonl", batch_size=a.batch, quiet=True)
    # Length-averaged reference log-probs (lpo-ste's default) are the sums over the response length.
    rows = [json.loads(l) for l in (work / "pairs_ref_sum.jsonl").read_text().splitlines()]
    with (work / "pairs_ref_mean.jsonl").open("w") as f:
        for r in rows:
            n_c, n_r = len(r["chosen_tokens"]), len(r["rejected_tokens"])
            f.write(json.dumps({**r, "ref_chosen_logp": r["ref_chosen_logp"] / n_c,
                                "ref_rejected_logp": r["ref_rejected_logp"] / n_r, "ref_logp_mode": "mean/flat"})
                    + "\n")
    (work / "ready").write_text("ok")
    return {"pairs": a.pairs}


def _dtype(a) -> str:
    return "bfloat16" if a.dtype == "bf16" else "float32"


def child_lpo(a, work: Path, loss_type: str) -> dict:
    import torch

    from lpo_speech import trainer
    from lpo_speech.adapters.causal_lm import CausalLMPairModel
    from lpo_speech.recipe import (DataConfig, LossConfig, ModelConfig, ReferenceConfig, RuntimeConfig, TrainConfig,
                                   TrainRecipe)

    average = loss_type != "sigmoid"
    peak = {}

    def record_peak_and_skip_save(*_args, **_kw):  # the final checkpoint is not part of a step
        peak.setdefault("mb", peak_memory_mb(a.device))

    trainer.checkpoint.save_checkpoint = record_peak_and_skip_save
    phases = {"forward": [], "optimizer": []}
    if not a.device.startswith("cuda"):  # timing a phase on GPU would need a sync; CPU only
        time_calls(CausalLMPairModel, "forward", phases["forward"])  # body + log-probs (+ their gradients)
        time_calls(torch.optim.AdamW, "step", phases["optimizer"])
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench-{loss_type}-"))
    loss = (LossConfig(type="sigmoid", beta=BETA, gamma=0.0, average_logps=False) if loss_type == "sigmoid"
            else LossConfig(type=loss_type))
    recipe = TrainRecipe(
        model=ModelConfig(path=str(work / "model"), dtype=_dtype(a)),
        data=DataConfig(pairs=str(work / ("pairs_ref_mean.jsonl" if average else "pairs_ref_sum.jsonl")),
                        max_length=a.prompt_len + a.response_len),
        loss=loss, reference=ReferenceConfig(source="precomputed"),
        train=TrainConfig(out_dir=str(out_dir), lr=LR, max_steps=a.warmup + a.steps, batch_size=a.batch,
                          log_every=1, save_every=0, seed=a.seed, max_grad_norm=1.0),
        runtime=RuntimeConfig(device=a.device))
    t0 = time.perf_counter()
    trainer.train(recipe, quiet=True)
    rows = trainer.read_metrics(out_dir)
    ends = [r["elapsed_s"] for r in rows]
    step_s = [e - s for s, e in zip([0.0] + ends[:-1], ends)]
    return {"step_seconds": step_s, "peak_mb": peak.get("mb", peak_memory_mb(a.device)),
            "total_seconds": time.perf_counter() - t0, "losses": [r["loss"] for r in rows],
            "threads": torch.get_num_threads(), "phase_seconds": phases}


def child_trl(a, work: Path, liger: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import DPOConfig, DPOTrainer
    import trl

    # TRL needs a tokenizer (pre-tokenized columns are rejected): a word-level one, one word per id.
    vocab = {("<pad>" if i == PAD else "<eos>" if i == EOS else f"t{i}"): i for i in range(a.vocab)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    words = lambda ids: " ".join(tok.convert_ids_to_tokens(ids))  # noqa: E731
    rows = [json.loads(l) for l in (work / "pairs_ref_sum.jsonl").read_text().splitlines()]
    ds = Dataset.from_list([{"prompt": words(r["prompt_tokens"]), "chosen": " " + words(r["chosen_tokens"]),
                             "rejected": " " + words(r["rejected_tokens"]), "ref_chosen_logps": r["ref_chosen_logp"],
                             "ref_rejected_logps": r["ref_rejected_logp"]} for r in rows])

    class PrecomputedDPOTrainer(DPOTrainer):
        """TRL's reference pass runs in its constructor; the pairs already carry the reference log-probs
        (the same values lpo-speech reads), so keep them instead of recomputing."""

        def _precompute_ref_logps(self, dataset, name, batch_size):
            assert "ref_chosen_logps" in dataset.column_names
            return dataset

    times: list[float] = []
    peak = {}
    phases = {"forward": [], "optimizer": []}
    if not a.device.startswith("cuda"):
        time_calls(PrecomputedDPOTrainer, "compute_loss", phases["forward"])  # forward, loss and its metrics

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not times:
                times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter())

        def on_pre_optimizer_step(self, args, state, control, **kw):
            self.t_opt = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kw):
            if not a.device.startswith("cuda"):
                phases["optimizer"].append(time.perf_counter() - self.t_opt)

        def on_train_end(self, args, state, control, **kw):
            peak["mb"] = peak_memory_mb(a.device)

    cuda = a.device.startswith("cuda")
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    # Liger: TrainingArguments' use_liger_kernel patches the model's kernels (RMSNorm, RoPE, SwiGLU); the
    # TRL versions that have use_liger_loss take the chunked fused-linear DPO loss from it too.
    fields = {f.name for f in dataclasses.fields(DPOConfig)}
    liger_flags = {k: True for k in ("use_liger_kernel", "use_liger_loss") if liger and k in fields}
    args = DPOConfig(**liger_flags,
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), per_device_train_batch_size=a.batch,
        max_steps=a.warmup + a.steps, learning_rate=LR, lr_scheduler_type="cosine", weight_decay=0.0,
        max_grad_norm=1.0, loss_type=["sigmoid"], beta=BETA, max_length=None, precompute_ref_log_probs=True,
        bf16=cuda and a.dtype == "bf16", fp16=False, gradient_checkpointing=False, use_cpu=not cuda,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
        seed=a.seed, adam_beta1=0.9, adam_beta2=0.95)
    t0 = time.perf_counter()
    trainer = PrecomputedDPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.add_callback(Timer())
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    step_s = [e - s for s, e in zip(times[:-1], times[1:])]
    out = {"step_seconds": step_s, "peak_mb": peak.get("mb", peak_memory_mb(a.device)),
           "total_seconds": time.perf_counter() - t0, "losses": losses, "trl_version": trl.__version__,
           "threads": torch.get_num_threads(), "phase_seconds": phases}
    if liger:
        import liger_kernel

        out.update(liger_flags=sorted(liger_flags), liger_version=getattr(liger_kernel, "__version__", None)
                   or importlib.metadata.version("liger-kernel"))
    return out


def child_sampling(a, work: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from lpo_speech.tts.sampling import sample

    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(work / "model", dtype=dtype).to(a.device).eval()
    rows = [json.loads(l) for l in (work / "pairs.jsonl").read_text().splitlines()]
    prompts = [r["prompt_tokens"] for r in rows[:a.sample_prompts]]
    # Codec-style slots: 4 equal ranges over the ids after EOS (each response position emits from its slot).
    k, lo = 4, 2
    width = (a.vocab - lo) // k
    slots = [(lo + i * width, lo + (i + 1) * width) for i in range(k)]
    kw = dict(n=a.n_candidates, max_new_tokens=a.new_tokens, eos_id=EOS, temperature=1.0, top_k=0,
              slot_ranges=slots, seed=a.seed)
    sample(lm, prompts[:1], **{**kw, "n": 2, "max_new_tokens": 4})  # warm-up
    out = {}
    for name, bs in (("batched", a.n_candidates * len(prompts)), ("one_at_a_time", 1)):
        t0 = time.perf_counter()
        res = sample(lm, prompts, batch_size=bs, **kw)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        n_cand = sum(len(r) for r in res)
        out[name] = {"batch_size": bs, "seconds": secs, "candidates": n_cand,
                     "tokens": sum(len(s.tokens) for r in res for s in r), "candidates_per_s": n_cand / secs}
    out["speedup"] = out["batched"]["candidates_per_s"] / out["one_at_a_time"]["candidates_per_s"]
    return out


# ----------------------------------------------------------------------------------------------- parent

def run_child(a, name: str, work: Path, extra_env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--work", str(work)] + a.forward
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(r: dict, a) -> dict:
    measured = r["step_seconds"][a.warmup:]
    med = statistics.median(measured)
    out = {**r, "measured_step_seconds": measured, "median_step_seconds": med, "pairs_per_s": a.batch / med}
    ph = r.get("phase_seconds") or {}
    if all(len(ph.get(k, [])) == len(r["step_seconds"]) for k in ("forward", "optimizer")):
        fwd, opt = (statistics.median(ph[k][a.warmup:]) for k in ("forward", "optimizer"))
        # forward: body + log-probs (ours also forms the log-prob gradients there); rest: backward, clip, data
        out["phases"] = {"forward": fwd, "optimizer": opt, "backward_and_rest": med - fwd - opt}
    if a.peak_tflops:
        out["mfu"] = model_flops_per_step(a) / med / (a.peak_tflops * 1e12)
    return out


def table(res: dict, a) -> str:
    mem = "CUDA max allocated" if a.device.startswith("cuda") else "peak RSS"
    lines = [f"| trainer | loss | pairs/s | s/step (median of {a.steps}) | forward / backward+rest / optimizer (s) "
             f"| {mem} (GB) | pairs/s vs TRL | memory vs TRL |" + (" MFU |" if a.peak_tflops else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if a.peak_tflops else "")]
    trl = res.get("trl") if "pairs_per_s" in res.get("trl", {}) else None
    for name in TRAINERS:
        r = res.get(name)
        if r is None:
            continue
        loss = "sigmoid" if name != "lpo-ste" else "lpo-ste"
        loss += " (Liger)" if name == "trl-liger" else ""
        if "pairs_per_s" not in r:
            lines.append(f"| {name} | {loss} | - | - | - | - | - | - |" + (" - |" if a.peak_tflops else "")
                         + f" <!-- {r.get('skipped') or 'failed'} -->")
            continue
        speed = f"{r['pairs_per_s'] / trl['pairs_per_s']:.2f}x" if trl else "-"
        memr = f"{r['peak_mb'] / trl['peak_mb']:.2f}x" if trl else "-"
        ph = r.get("phases")
        split = (f"{ph['forward']:.1f} / {ph['backward_and_rest']:.1f} / {ph['optimizer']:.1f}" if ph else "-")
        lines.append(f"| {name} | {loss} | {r['pairs_per_s']:.3f} | {r['median_step_seconds']:.2f} | {split} | "
                     f"{r['peak_mb'] / 1024:.2f} | {speed} | {memr} |"
                     + (f" {100 * r['mfu']:.1f}% |" if a.peak_tflops else ""))
    s = res.get("sampling")
    if s and "speedup" in s:
        lines += ["", "| sampling (N = %d per prompt, %d prompts, %d new tokens) | candidates/s | seconds |"
                  % (a.n_candidates, a.sample_prompts, a.new_tokens), "|---|---|---|"]
        for k in ("batched", "one_at_a_time"):
            lines.append(f"| {k} (batch {s[k]['batch_size']}) | {s[k]['candidates_per_s']:.2f} | {s[k]['seconds']:.1f} |")
        lines.append(f"| speedup | {s['speedup']:.2f}x | |")
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    for k in PRESETS["cpu"]:
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=None, help=f"override the preset's {k}")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default=None, help="fp32 on CPU, bf16 default on CUDA")
    ap.add_argument("--warmup", type=int, default=1, help="optimizer steps not timed")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    ap.add_argument("--trainers", default=",".join(TRAINERS), help="comma list of " + ", ".join(TRAINERS))
    ap.add_argument("--no-sampling", action="store_true")
    ap.add_argument("--n-candidates", type=int, default=8)
    ap.add_argument("--sample-prompts", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (e.g. 989 for H100 bf16) for MFU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="work folder (default: cached by configuration under the temp dir)")
    ap.add_argument("--out", default=None, help="JSON results (default benchmarks/results/run_all-<preset>-<device>.json)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.forward = [x for x in (argv if argv is not None else sys.argv[1:])]
    # drop --child/--work (the parent adds its own)
    fwd, skip = [], False
    for x in a.forward:
        if skip:
            skip = False
            continue
        if x in ("--child", "--work"):
            skip = True
            continue
        if x.startswith(("--child=", "--work=")):
            continue
        fwd.append(x)
    a.forward = fwd
    for k, v in PRESETS[a.preset].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.dtype = a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")
    a.pairs = max(a.pairs, a.batch * (a.warmup + a.steps))
    return a


def missing_for(trainer: str, device: str) -> str | None:
    """Why a trainer cannot run here (a package or the device it needs), else None."""
    if trainer not in ("trl", "trl-liger"):
        return None
    probe = subprocess.run([sys.executable, "-c", "import trl, datasets"], capture_output=True)
    if probe.returncode != 0:
        return "TRL is not installed (pip install trl==1.16.0)"
    if trainer == "trl-liger":
        if subprocess.run([sys.executable, "-c", "import liger_kernel"], capture_output=True).returncode != 0:
            return "liger-kernel is not installed (pip install liger-kernel==0.8.5)"
        if not device.startswith("cuda"):
            return "Liger's Triton kernels need a CUDA GPU"
    return None


def write_results(a, path: Path, res: dict, t_all: float, *, partial: bool) -> dict:
    """The results file as it stands: rewritten after every child, so a run cut short keeps its rows."""
    cfg = {k: getattr(a, k) for k in ("preset", "device", "dtype", "vocab", "hidden", "intermediate", "layers",
                                      "heads", "kv_heads", "prompt_len", "response_len", "batch", "pairs", "warmup",
                                      "steps", "n_candidates", "sample_prompts", "new_tokens", "peak_tflops")}
    out = {"config": cfg, "machine": a.machine, "date": time.strftime("%Y-%m-%d %H:%M"),
           "wall_seconds": time.perf_counter() - t_all, "partial": partial, "results": res}
    ratios = {}
    if all("pairs_per_s" in res.get(k, {}) for k in ("trl", "lpo-sigmoid")):
        ratios = {"speed_lpo_over_trl": res["lpo-sigmoid"]["pairs_per_s"] / res["trl"]["pairs_per_s"],
                  "memory_lpo_over_trl": res["lpo-sigmoid"]["peak_mb"] / res["trl"]["peak_mb"]}
    if all("pairs_per_s" in res.get(k, {}) for k in ("trl-liger", "lpo-sigmoid")):
        ratios.update(speed_lpo_over_trl_liger=res["lpo-sigmoid"]["pairs_per_s"] / res["trl-liger"]["pairs_per_s"],
                      memory_lpo_over_trl_liger=res["lpo-sigmoid"]["peak_mb"] / res["trl-liger"]["peak_mb"])
    out["ratios"] = ratios
    out["table"] = table(res, a)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(path)  # never a half-written file, whenever the run is cut
    return out


def main(argv=None) -> dict | None:
    a = parse(argv)
    if a.child:
        work = Path(a.work)
        fn = {"prepare": lambda: child_prepare(a, work), "trl": lambda: child_trl(a, work),
              "trl-liger": lambda: child_trl(a, work, liger=True),
              "lpo-sigmoid": lambda: child_lpo(a, work, "sigmoid"), "lpo-ste": lambda: child_lpo(a, work, "lpo-ste"),
              "sampling": lambda: child_sampling(a, work)}[a.child]
        print(json.dumps(fn()))
        return None
    work = Path(a.work) if a.work else Path(tempfile.gettempdir()) / f"lpo_speech_bench_{config_key(a)}"
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    a.machine = machine()
    path = Path(a.out) if a.out else HERE / "results" / f"run_all-{a.preset}-{a.device.split(':')[0]}.json"
    res: dict = {}
    write_results(a, path, res, t_all, partial=True)  # the configuration, before any row
    if not (work / "ready").exists():
        print(f"preparing model, {a.pairs} pairs and reference log-probs in {work} ...", flush=True)
        r = run_child(a, "prepare", work)
        if "error" in r:
            res["prepare"] = r
            write_results(a, path, res, t_all, partial=True)
            raise SystemExit(f"prepare failed:\n{r['error']}")
    for name in [t.strip() for t in a.trainers.split(",") if t.strip()]:
        missing = missing_for(name, a.device)
        if missing:
            res[name] = {"skipped": missing}
            print(f"{name}: skipped ({missing})", flush=True)
            continue
        print(f"running {name} ...", flush=True)
        r = run_child(a, name, work)
        res[name] = summarize(r, a) if "step_seconds" in r else r
        print(f"  {name}: " + (f"{res[name]['pairs_per_s']:.3f} pairs/s, peak {res[name]['peak_mb']:.0f} MB"
                               if "pairs_per_s" in res[name] else str(r)[:2500]), flush=True)
        write_results(a, path, res, t_all, partial=True)
    if not a.no_sampling:
        print("running sampling ...", flush=True)
        res["sampling"] = run_child(a, "sampling", work)
    out = write_results(a, path, res, t_all, partial=False)
    print(f"\n{a.preset} preset on {out['machine']}: vocab {a.vocab}, hidden {a.hidden}, {a.layers} layers, "
          f"sequences {a.prompt_len}+{a.response_len} tokens, batch {a.batch} pairs, {a.dtype}\n")
    print(out["table"])
    print(f"\nresults: {path}")
    return out


if __name__ == "__main__":
    main()
