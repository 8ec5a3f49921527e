"""The preference trainer shared by the TTS and ASR tracks.

Read top to bottom: set up processes and seeds, load pairs and the policy (through the track's
adapter), build optimizer and schedule, maybe resume, then the loop: for each global batch, each
process runs its micro-batches (chosen and rejected in one forward), the preference loss, backward;
then clip, step, log, checkpoint. Launch with `torchrun --nproc_per_node N -m lpo_speech.cli train ...`
(or `accelerate launch`) for DDP; a plain `lpo-speech train` is one process.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lpo_speech import checkpoint
from lpo_speech.adapters import load_adapter
from lpo_speech.batching import GlobalBatches
from lpo_speech.recipe import TrainRecipe
from lpo_speech.run_folder import RunFolder
from lpo_speech.distributed import all_reduce_mean, barrier, cleanup, init_distributed, record_runtime
from lpo_speech.errors import UserError
from lpo_speech.lora import adapter_disabled
from lpo_speech.losses import preference_loss
from lpo_speech.training_log import MetricsLog
from lpo_speech.parallel import (clip_grad_norm, fsdp_summary, full_state_dict, gradient_sync, is_sharded, shard_fsdp,
                                 wrap)
from lpo_speech.policy import disable_dropout, load_policy, load_reference, save_trained
from lpo_speech.precision import autocast, compute_tag, dtype_name
from lpo_speech.records import PreferencePair, read_jsonl

LOGGED = ("loss", "loss_unreg", "reg", "sft", "x1", "x2", "margin", "accuracy", "chosen_nll", "r2")


def ref_logp_mode(recipe: TrainRecipe) -> str:
    """How sequence log-probs are reduced; precomputed reference log-probs must match it."""
    return f"{'mean' if recipe.loss.average_logps else 'sum'}/{recipe.model.codebook_reduction}"


def load_pairs(recipe: TrainRecipe, adapter, quiet: bool = True, dtype: torch.dtype | None = None
               ) -> tuple[list[dict], list[PreferencePair]]:
    """Encode every pair; check precomputed reference log-probs (reduction and, given the run's compute
    `dtype`, the dtype they were computed in); drop over-long pairs (counted). ASR audio is decoded and
    turned into features once, into the store beside the pair file (each process its share), and
    batches read them back (lpo_speech.asr.features): memory does not grow with the audio."""
    from lpo_speech.asr.features import pair_features

    items, pairs, too_long = [], [], 0
    want_mode = ref_logp_mode(recipe)
    want_dtype = (compute_tag(dtype, strategy=recipe.train.strategy, lora=recipe.model.lora is not None)
                  if dtype is not None else None)
    records = list(read_jsonl(recipe.data.pairs, PreferencePair))
    if recipe.data.limit:  # the file's first N pairs (a smoke run)
        records = records[:recipe.data.limit]
    with pair_features(adapter, recipe.data.pairs, records, quiet=quiet):  # a failure below removes them
        bar = tqdm(records, desc="load pairs", unit="pair", disable=quiet, dynamic_ncols=True)
        for i, pair in enumerate(bar, 1):
            where = f"{recipe.data.pairs}:{i}"
            sft = recipe.loss.type == "sft"
            if not pair.has_rejected and not sft:
                raise UserError("no rejected response: chosen-only examples train only with loss.type sft",
                                where=where)
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
                made_in = pair.extra.get("ref_logp_dtype")
                if made_in is not None and want_dtype is not None and made_in != want_dtype:
                    raise UserError(f"reference log-probs were computed in {made_in} but this run computes in "
                                    f"{want_dtype} (model.dtype, train.strategy): rerun `lpo-speech ref-logps` "
                                    "with this recipe", where=where)
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
    info = init_distributed(recipe.runtime.device)
    if recipe.runtime.threads:
        torch.set_num_threads(recipe.runtime.threads)
    if not Path(recipe.data.pairs).is_file():  # fail before the (slow) model load
        raise UserError(f"{recipe.data.pairs}: no such file")
    # One run at a time in the folder; a resume only with the run's own settings (lpo_speech.run_folder).
    with RunFolder(recipe.train.out_dir, recipe, info, resume=resume) as run:
        return _train(recipe, info, run, quiet=quiet, adapter=adapter)


def _train(recipe: TrainRecipe, info, run: RunFolder, *, quiet: bool, adapter) -> Path:
    cfg = recipe.train
    run_dir = run.path
    seed_all(cfg.seed)

    adapter = adapter or load_adapter(recipe.model)
    adapter.average = recipe.loss.average_logps
    adapter.chosen_only = recipe.loss.type == "sft"  # no preference term: skip the rejected rows
    # FSDP loads on the CPU and moves each rank's shard to its device (lpo_speech.parallel).
    load_device = torch.device("cpu") if cfg.strategy == "fsdp" else info.device
    policy, dtype = load_policy(recipe, adapter, info.device, load_device=load_device)
    # FSDP's units, logged below; a model with no transformer blocks to shard by stops here, before any write.
    units = fsdp_summary(policy) if cfg.strategy == "fsdp" else {}
    policy.train()
    disable_dropout(policy)
    items, pairs = load_pairs(recipe, adapter, quiet=quiet or not info.is_main, dtype=dtype)
    global_size = cfg.batch_size * cfg.grad_accum * info.world
    if len(items) < global_size:
        raise UserError(f"{recipe.data.pairs}: {len(items)} usable pairs, fewer than one global batch of "
                        f"{global_size} (train.batch_size x train.grad_accum x processes); lower train.batch_size or "
                        "train.grad_accum, or add data")
    reference = None  # None: stored log-probs, or (LoRA) the policy with its adapter disabled
    if recipe.reference.source == "model" and recipe.loss.type != "sft" and recipe.model.lora is None:
        reference = load_reference(recipe, adapter, info.device, load_device=load_device)
        if cfg.strategy == "fsdp":
            reference = shard_fsdp(reference, info, cfg, dtype)

    batches = GlobalBatches([adapter.length(it) for it in items], global_size, seed=cfg.seed,
                            length_buckets=recipe.data.length_buckets)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * batches.steps_per_epoch))
    model = wrap(policy, info, cfg, dtype)  # DDP wrapper, FSDP shards (in place), or the policy itself
    trainable = [p for p in policy.parameters() if p.requires_grad]
    opt = build_optimizer(policy, cfg)  # after sharding: FSDP's optimizer steps each rank's shard
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(
        s, warmup=cfg.warmup_steps, total=total, min_ratio=cfg.min_lr / cfg.lr))

    start = checkpoint.resume(run_dir, policy, opt, sched, info=info) if run.resume else 0
    run.begin(step=start)  # config.yaml and settings on a fresh start; a resume's changes recorded
    record_runtime("train", info, run_dir if info.is_main else None, quiet=quiet, strategy=cfg.strategy,
                   weights=dtype_name(dtype), master=cfg.master_dtype if dtype != torch.float32 else None,
                   lora=f"r={recipe.model.lora.r}" if recipe.model.lora else None,
                   trainable=f"{sum(p.numel() for p in policy.parameters() if p.requires_grad):,} params", **units)
    log = MetricsLog(run_dir, start_step=start, enabled=info.is_main)
    live_reference = recipe.reference.source == "model" and recipe.loss.type != "sft"

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
            if live_reference:
                ref = reference_logps(reference or policy, batch, info.device, dtype)
            else:
                ref = _stored_logps([items[i]["ref"] for i in idx], info.device)
            # Gradients are reduced across ranks only on the last micro-step of the global batch.
            with gradient_sync(model, micro == cfg.grad_accum - 1):
                with autocast(info.device, dtype):
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
        grad_norm = clip_grad_norm(trainable, cfg.max_grad_norm)
        # One host read per step: a non-finite loss or gradient stops the run before the optimizer
        # touches the weights, so the last checkpoint stays good and no broken model is saved.
        if not torch.isfinite(grad_norm + sums["loss"]).item():
            ids = [pairs[i].id for i in global_batch]
            raise UserError(f"step {step + 1}: non-finite loss or gradient (loss {float(sums['loss']):g}, grad norm "
                            f"{float(grad_norm):g}) on pairs {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}; "
                            "nothing was saved for this step", where=str(recipe.data.pairs))
        lr = sched.get_last_lr()[0]  # the rate this step used
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        # Metrics stay on the device until a log step: no further host sync per step.
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
        save_checkpoint(cfg, run_dir, step + 1, policy, opt, sched, info, last=last)
    bar.close()
    return finish(recipe, adapter, policy, run_dir, info, dtype, log, title=f"{recipe.loss.type} on {recipe.data.pairs}")


def save_checkpoint(cfg, run_dir: Path, step: int, policy, opt, sched, info, *, last: bool) -> None:
    """A checkpoint every `train.save_every` steps and after the last one (with optimizer state)."""
    if (cfg.save_every and step % cfg.save_every == 0) or (last and cfg.save_optimizer):
        # Without optimizer state a last checkpoint cannot continue a run exactly: model/ is the result.
        checkpoint.save_checkpoint(run_dir, step, policy, opt, sched, rank=info.rank, world=info.world,
                                   keep=cfg.keep_checkpoints, sharded=is_sharded(policy), optimizer=cfg.save_optimizer)


def finish(recipe: TrainRecipe, adapter, policy, run_dir: Path, info, dtype: torch.dtype, log: MetricsLog, *,
           title: str, panels: list | None = None) -> Path:
    """Save the model, draw the curves, close the log and the process group; returns the run folder."""
    save_model(recipe, adapter, policy, run_dir, info, dtype)
    if info.is_main:
        log.finish(title=title, panels=panels)
    barrier()
    log.close()
    cleanup()
    return run_dir


def save_model(recipe: TrainRecipe, adapter, policy, run_dir: Path, info, dtype: torch.dtype) -> None:
    """The trained model in `model.dtype` (and the LoRA adapter, per model.lora.save). A sharded policy
    is gathered to rank 0 and loaded into a fresh copy there (collective: every rank calls this)."""
    if is_sharded(policy):
        full = full_state_dict(policy)
        if not info.is_main:
            return
        policy, _ = load_policy(recipe, adapter, torch.device("cpu"))
        policy.load_state_dict(full)
    if info.is_main:
        save_trained(policy, adapter, run_dir, recipe.model.lora, dtype)


@torch.no_grad()
def reference_logps(reference, batch, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Live reference log-probs: a frozen copy, or the LoRA policy with its adapter disabled."""
    with adapter_disabled(reference), autocast(device, dtype):
        out = reference(batch)
    return out.chosen.float(), out.rejected.float()


def _stored_logps(stored, device) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor(stored, dtype=torch.float32, device=device)
    return t[:, 0], t[:, 1]


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
