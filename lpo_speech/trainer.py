"""The preference trainer shared by the TTS and ASR tracks.

Read top to bottom: set up processes and seeds, load pairs and the policy (through the track's
adapter), build optimizer and schedule, maybe resume, then the loop: for each global batch, each
process runs its micro-batches (chosen and rejected in one forward), the preference loss, backward;
then clip, step, log, checkpoint. Launch with `torchrun --nproc_per_node N -m lpo_speech.cli train ...`
(or `accelerate launch`) for DDP; a plain `lpo-speech train` is one process.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from lpo_speech import checkpoint
from lpo_speech.adapters import load_adapter
from lpo_speech.batching import GlobalBatches
from lpo_speech.config import TrainRecipe, save_recipe
from lpo_speech.distributed import all_reduce_mean, barrier, cleanup, init_distributed
from lpo_speech.errors import UserError
from lpo_speech.losses import preference_loss
from lpo_speech.metrics_log import MetricsLog
from lpo_speech.records import PreferencePair, read_jsonl

LOGGED = ("loss", "loss_unreg", "reg", "sft", "x1", "x2", "margin", "accuracy", "chosen_nll", "r2")


def ref_logp_mode(recipe: TrainRecipe) -> str:
    """How sequence log-probs are reduced; precomputed reference log-probs must match it."""
    return f"{'mean' if recipe.loss.average_logps else 'sum'}/{recipe.model.codebook_reduction}"


def load_pairs(recipe: TrainRecipe, adapter, quiet: bool = True) -> tuple[list[dict], list[PreferencePair]]:
    """Encode every pair; check precomputed reference log-probs; drop over-long pairs (counted)."""
    items, pairs, too_long = [], [], 0
    want_mode = ref_logp_mode(recipe)
    records = list(read_jsonl(recipe.data.pairs, PreferencePair))
    for i, pair in enumerate(tqdm(records, desc="load pairs", unit="pair", disable=quiet, dynamic_ncols=True), 1):
        where = f"{recipe.data.pairs}:{i}"
        sft = recipe.loss.type == "sft"
        if not pair.has_rejected and not sft:
            raise UserError("no rejected response: chosen-only examples train only with loss.type sft", where=where)
        if sft:  # no preference term: reference log-probs are not used
            pair.ref_chosen_logp = pair.ref_chosen_logp or 0.0
            pair.ref_rejected_logp = pair.ref_rejected_logp or 0.0
        elif recipe.reference.source == "precomputed":
            if pair.ref_chosen_logp is None or pair.ref_rejected_logp is None:
                raise UserError("no precomputed reference log-probs: run `lpo-speech ref-logps` on this file "
                                "first, or set reference.source=model", where=where)
            mode = pair.extra.get("ref_logp_mode")
            if mode is not None and mode != want_mode:
                raise UserError(f"reference log-probs were computed as {mode!r} but this recipe reduces as "
                                f"{want_mode!r} (loss.average_logps / model.codebook_reduction)", where=where)
        item = adapter.encode(pair, where, Path(recipe.data.pairs).parent)
        if adapter.length(item) > recipe.data.max_length:
            too_long += 1
            continue
        item["ref"] = (pair.ref_chosen_logp, pair.ref_rejected_logp)
        items.append(item)
        pairs.append(pair)
    if too_long:
        print(f"data: dropped {too_long} pairs longer than data.max_length={recipe.data.max_length}")
    return items, pairs


def lr_lambda(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine from lr down to min_lr."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    # No weight decay on biases and norms (1-D parameters), as usual for transformers.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel: one pass per tensor (5.5x faster than foreach on CPU: 0.33 s vs 1.9 s per step
    # for a 38M-parameter codec LM, benchmarks/README.md); same update up to float rounding.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, fused=fused)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(recipe: TrainRecipe, *, resume: bool = False, quiet: bool = False, adapter=None) -> Path:
    """Train and return the run folder. `adapter` may be passed in to reuse its caches (features,
    frozen-encoder states) across runs on the same data, as benchmarks comparing losses do."""
    cfg = recipe.train
    info = init_distributed(recipe.runtime.device)
    run_dir = Path(cfg.out_dir)
    if info.is_main:
        if checkpoint.latest(run_dir) is not None and not resume:
            raise UserError(f"{run_dir}: holds checkpoints of an earlier run; pass --resume to continue it "
                            "or set train.out_dir to a new folder")
        run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, run_dir / "config.yaml")
    if not Path(recipe.data.pairs).is_file():  # fail before the (slow) model load
        raise UserError(f"{recipe.data.pairs}: no such file")
    seed_all(cfg.seed)
    use_bf16 = recipe.model.dtype == "bfloat16" or (recipe.model.dtype == "auto" and info.device.type == "cuda")

    adapter = adapter or load_adapter(recipe.model)
    adapter.average = recipe.loss.average_logps
    adapter.chosen_only = recipe.loss.type == "sft"  # no preference term: skip the rejected rows
    policy = adapter.load(recipe.model.path, info.device)
    policy.train()
    _disable_dropout(policy)
    reference = None
    if recipe.reference.source == "model" and recipe.loss.type != "sft":
        reference = adapter.load(recipe.reference.path or recipe.model.path, info.device).eval()
        reference.requires_grad_(False)
    items, _ = load_pairs(recipe, adapter, quiet=quiet or not info.is_main)

    global_size = cfg.batch_size * cfg.grad_accum * info.world
    if len(items) < global_size:
        raise UserError(f"{recipe.data.pairs}: {len(items)} usable pairs, fewer than one global batch of "
                        f"{global_size} (train.batch_size x train.grad_accum x processes)")
    batches = GlobalBatches([adapter.length(it) for it in items], global_size, seed=cfg.seed,
                            length_buckets=recipe.data.length_buckets)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * batches.steps_per_epoch))
    opt = build_optimizer(policy, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(
        s, warmup=cfg.warmup_steps, total=total, min_ratio=cfg.min_lr / cfg.lr))

    start = 0
    if resume and (ckpt := checkpoint.latest(run_dir)) is not None:
        start = checkpoint.load_checkpoint(ckpt, policy, opt, sched, rank=info.rank, device=info.device)
    model = DDP(policy) if info.world > 1 else policy
    log = MetricsLog(run_dir, start_step=start, enabled=info.is_main)

    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=quiet or not info.is_main,
               dynamic_ncols=True)
    pending: list[dict[str, torch.Tensor]] = []
    t0, pairs_done = time.perf_counter(), 0
    for step in range(start, total):
        global_batch = batches.batch(step)
        sums = {k: torch.zeros((), device=info.device) for k in LOGGED}
        for micro in range(cfg.grad_accum):
            idx = GlobalBatches.micro_batch(global_batch, micro, info.rank, info.world, cfg.batch_size)
            batch = {k: v.to(info.device, non_blocking=True) for k, v in
                     adapter.collate([items[i] for i in idx]).items()}
            ref = _reference_logps(reference, batch, [items[i]["ref"] for i in idx], info.device, use_bf16)
            # DDP all-reduces gradients only on the last micro-step of the global batch.
            sync = micro == cfg.grad_accum - 1 or info.world == 1
            with contextlib.nullcontext() if sync else model.no_sync():
                with _autocast(info.device, use_bf16):
                    out = model(batch)
                losses, m = preference_loss(out.chosen, out.rejected, ref[0], ref[1], loss_type=recipe.loss.type,
                                            beta=recipe.loss.beta, r1=recipe.loss.r1, r2=recipe.loss.r2,
                                            gamma=recipe.loss.gamma, label_smoothing=recipe.loss.label_smoothing)
                sft = out.chosen_nll.mean()
                loss = losses.mean() + recipe.loss.sft_weight * sft
                (loss / cfg.grad_accum).backward()
            m.update(loss=loss.detach(), sft=sft.detach(), chosen_nll=sft.detach())
            for k in LOGGED:
                sums[k] += m[k] / cfg.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(),
                                                   cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        lr = sched.get_last_lr()[0]  # the rate this step used
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        # Metrics stay on the device until a log step: no host sync per step.
        pending.append({**sums, "grad_norm": grad_norm.detach(), "lr": torch.tensor(lr)})
        pairs_done += global_size
        last = step + 1 == total
        if (step + 1) % cfg.log_every == 0 or last:
            stacked = {k: all_reduce_mean(torch.stack([p[k].to(info.device).float() for p in pending]))
                       for k in pending[0]}
            rows = [{k: float(v[j]) for k, v in stacked.items()} for j in range(len(pending))]
            # elapsed_s: seconds since this process entered the loop, read after the host read above (so
            # the steps are done); per step with log_every 1, so throughput can be read from the log.
            elapsed = time.perf_counter() - t0
            for j, row in enumerate(rows):
                row["elapsed_s"] = elapsed
                log.write(step + 2 - len(pending) + j, row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", x1=f"{row['x1']:+.3f}", x2=f"{row['x2']:+.3f}",
                            pairs_s=f"{pairs_done / elapsed:.2f}")
            pending = []
        bar.update(1)
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or last:
            checkpoint.save_checkpoint(run_dir, step + 1, policy, opt, sched, rank=info.rank, world=info.world,
                                       keep=cfg.keep_checkpoints)
    bar.close()
    if info.is_main:
        adapter.save(policy, run_dir / "model")
        log.finish(title=f"{recipe.loss.type} on {recipe.data.pairs}")
    barrier()
    log.close()
    cleanup()
    return run_dir


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def _reference_logps(reference, batch, stored, device, bf16) -> tuple[torch.Tensor, torch.Tensor]:
    if reference is None:
        t = torch.tensor(stored, dtype=torch.float32, device=device)
        return t[:, 0], t[:, 1]
    with _autocast(device, bf16):
        out = reference(batch)
    return out.chosen.float(), out.rejected.float()


def _disable_dropout(model: torch.nn.Module) -> None:
    # Policy and reference log-probs must be comparable: no dropout noise (as TRL does by default).
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
