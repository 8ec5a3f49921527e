"""Online training (`online:` in a track recipe): the policy samples, the judges score, the policy trains.

Read top to bottom like lpo_speech.trainer, whose pieces it shares (optimizer, schedule, wrapping,
checkpoints, saving). Each optimizer step s:

  1. prompts   the next `online.prompts_per_step` prompts of a seeded permutation per epoch (a
               function of (train.seed, s) alone), split over the processes (position k to process
               k mod world: every process needs one, so more processes than prompts is refused);
               each process samples and scores its share on its own device;
  2. sample    every `sample_every` steps the current policy draws `online.samples` candidates per
               prompt (the track's sampler: batched KV-cache sampling for codec LMs, Whisper's
               decoder for ASR; under FSDP the weights are gathered once for the draw), seeded by
               (train.seed, s, process); the steps between reuse them;
  3. score     the recipe's judges score every candidate in batches (lpo_speech.tts.scoring for TTS,
               WER/CER for ASR) and lpo_speech.rewards turns the scores into one reward each;
  4. signal    `algorithm: pairs`: per prompt, the best-rewarded candidate is chosen and the worst
               rejected (skipped when the gap is at most `min_reward_gap`), trained with `loss`
               (LPO, DPO, ...; reference log-probs from the live reference); `algorithm: grpo`: each
               prompt's candidates are a group, their rewards become advantages
               (lpo_speech.losses.group_advantages) and the loss is lpo_speech.losses.grpo_loss;
  5. update    the rows go through in micro-batches of `train.batch_size` (the same number on every
               process), gradients accumulate, and the step's loss is the mean over every process's
               rows, so any process count given the same candidates trains alike (tested); then clip,
               a non-finite check, optimizer and schedule step, log, checkpoint.

Every sampled batch is kept in `<out_dir>/samples/step-<s>.rank<r>.jsonl` (candidates, scores,
rewards), so a run can be inspected, and a resumed run (checkpoints hold weights, optimizer,
schedule and RNG; the log is cut back) reuses the batch it was training on: a killed online run
resumed gives the losses of an uninterrupted one (tested). `metrics.jsonl` adds per step the mean
reward, each reward term's mean, the pairs used (pairs) or the KL (grpo), and the seconds spent
sampling, scoring and training; `training_curves.png` plots them.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from lpo_speech import checkpoint
from lpo_speech.adapters import load_adapter
from lpo_speech.distributed import all_reduce_max, all_reduce_sum, init_distributed, record_runtime
from lpo_speech.errors import UserError
from lpo_speech.losses import group_advantages, grpo_loss, preference_loss
from lpo_speech.parallel import clip_grad_norm, fsdp_summary, gradient_sync, shard_fsdp, with_full_weights, wrap
from lpo_speech.policy import disable_dropout, load_policy, load_reference
from lpo_speech.precision import autocast, dtype_name
from lpo_speech.records import PreferencePair
from lpo_speech.recipe import TrackRecipe
from lpo_speech.run_folder import RunFolder
from lpo_speech.rewards import reward
from lpo_speech.trainer import build_optimizer, finish, lr_lambda, reference_logps, save_checkpoint, seed_all
from lpo_speech.training_log import MetricsLog

PANELS = [("reward", ["reward", "reward_best", "reward_worst"]), ("reward terms", ["term_cer", "term_wer", "term_sim",
          "term_emotion", "term_dnsmos", "term_failure", "term_duration"]),
          ("loss", ["loss", "loss_unreg", "pg"]), ("log-ratios / KL", ["x1", "x2", "kl"]),
          ("grad norm", ["grad_norm"]), ("seconds per step", ["sample_s", "score_s", "train_s"])]


class OnlineTask(Protocol):
    """What the online loop needs from a track (lpo_speech.tts.online, lpo_speech.asr.online)."""

    items: list  # the prompts (TTS) or utterances (ASR) to sample for

    def generate(self, policy, items: list, n: int, seed: int) -> list[list[dict]]:
        """n candidates per item from the live policy, scored: dicts with `scores` (and `tokens` or `text`)."""

    def text(self, item) -> str:
        """The text a reward term reads (the prompt's text, or the reference transcript)."""

    def record(self, item, chosen: dict, rejected: dict | None) -> PreferencePair:
        """A pair (or, rejected None, a chosen-only row) the adapter encodes."""

    def close(self) -> None:
        """Stop what the task started (judge worker processes)."""


def make_task(recipe: TrackRecipe, policy, adapter, info, dtype) -> OnlineTask:
    from lpo_speech.recipe import ONLINE_TASKS, named

    return named(ONLINE_TASKS[recipe.track])(recipe, policy, adapter, info, dtype)


def step_prompts(n_items: int, per_step: int, step: int, seed: int) -> list[int]:
    """The item indices of a step: consecutive slices of a permutation drawn per epoch from the seed."""
    out, start = [], step * per_step
    for k in range(start, start + per_step):
        epoch, pos = divmod(k, n_items)
        order = list(range(n_items))
        random.Random(f"{seed}:epoch{epoch}").shuffle(order)
        out.append(order[pos])
    return out


def _samples_path(run_dir: Path, step: int, rank: int) -> Path:
    return run_dir / "samples" / f"step-{step:06d}.rank{rank}.jsonl"


def sample_batch(task: OnlineTask, policy, recipe: TrackRecipe, step: int, info, run_dir: Path,
                 dtype: torch.dtype) -> tuple[list, list, dict]:
    """This rank's items and their scored candidates for `step` (reused from its samples file when
    the run already drew them), plus timings. The policy samples as it trains: in the compute dtype."""
    o, cfg = recipe.online, recipe.train
    idx = step_prompts(len(task.items), o.prompts_per_step, step, cfg.seed)[info.rank::info.world]
    items = [task.items[i] for i in idx]
    path = _samples_path(run_dir, step, info.rank)
    if path.is_file():  # drawn before a restart: the same candidates, not a new draw from later weights
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return items, [r["candidates"] for r in rows], {"sample_s": 0.0, "score_s": 0.0}
    seed = random.Random(f"{cfg.seed}:{step}:{info.rank}").randrange(2**31)
    t0 = time.perf_counter()
    # Under FSDP the sampler needs whole weights: gathered once for the whole draw (lpo_speech.parallel).
    with autocast(info.device, dtype):
        cands = with_full_weights(policy, lambda: task.generate(policy, items, o.samples, seed))
    timing = {"sample_s": getattr(task, "last_sample_s", time.perf_counter() - t0)}
    timing["score_s"] = time.perf_counter() - t0 - timing["sample_s"]
    for item, group in zip(items, cands):
        for c in group:
            c["reward"], c["terms"] = reward(c["scores"], task.text(item), o.rewards)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"id": getattr(it, "id", str(i)), "candidates": g}) + "\n"
                           for i, (it, g) in enumerate(zip(items, cands))))
    tmp.replace(path)
    return items, cands, timing


def best_vs_worst(task: OnlineTask, items: list, cands: list[list[dict]], min_gap: float) -> tuple[list, list[float]]:
    """Per item, (chosen = best reward, rejected = worst) when the gap exceeds `min_gap`; with no such
    item, one zero-weight pair keeps every process's forward and backward in step (DDP, FSDP)."""
    pairs, weights = [], []
    for item, group in zip(items, cands):
        ranked = sorted(group, key=lambda c: c["reward"], reverse=True)
        if ranked[0]["reward"] - ranked[-1]["reward"] > min_gap:
            pairs.append(task.record(item, ranked[0], ranked[-1]))
            weights.append(1.0)
    if not pairs:
        pairs, weights = [task.record(items[0], cands[0][0], cands[0][-1])], [0.0]
    return pairs, weights


def step_rows(task: OnlineTask, o, items: list, cands: list[list[dict]]) -> tuple[list, list[float], list[float]]:
    """This process's training rows for a step: records, the weight each carries in the loss (1 per
    pair; GRPO: the candidate's advantage) and the count each adds to the step's mean (0 for the
    stand-in pair of a process with no pair)."""
    if o.algorithm == "pairs":
        records, weights = best_vs_worst(task, items, cands, o.min_reward_gap)
        return records, weights, weights
    records = [task.record(it, c, None) for it, group in zip(items, cands) for c in group]
    advantages = group_advantages(torch.tensor([c["reward"] for g in cands for c in g]), o.samples,
                                  normalize=o.normalize).tolist()
    return records, advantages, [1.0] * len(records)


def check_world(o, info) -> None:
    """Every process samples whole prompts: a step's prompts must reach every process (before loading)."""
    if o.prompts_per_step < info.world:
        raise UserError(f"{o.prompts_per_step} prompts per step cannot feed {info.world} processes (each samples "
                        f"whole prompts): set it to at least {info.world}, best a multiple of {info.world}",
                        where="online.prompts_per_step")


def train_online(recipe: TrackRecipe, *, resume: bool = False, quiet: bool = False) -> Path:
    tr = recipe.train_recipe()
    info = init_distributed(tr.runtime.device)
    check_world(recipe.online, info)
    if tr.runtime.threads:
        torch.set_num_threads(tr.runtime.threads)
    # One run at a time in the folder; a resume only with the run's own settings (lpo_speech.run_folder).
    with RunFolder(tr.train.out_dir, recipe, info, resume=resume) as run:
        return _train_online(recipe, info, run, quiet=quiet)


def _train_online(recipe: TrackRecipe, info, run: RunFolder, *, quiet: bool) -> Path:
    o, tr = recipe.online, recipe.train_recipe()
    cfg = tr.train
    run_dir = run.path
    seed_all(cfg.seed)
    adapter = load_adapter(tr.model)
    adapter.average = tr.loss.average_logps
    # FSDP loads on the CPU and moves each rank's shard to its device (lpo_speech.parallel).
    load_device = torch.device("cpu") if cfg.strategy == "fsdp" else info.device
    policy, dtype = load_policy(tr, adapter, info.device, load_device=load_device)
    # FSDP's units, logged below; a model with no transformer blocks to shard by stops here, before any write.
    units = fsdp_summary(policy) if cfg.strategy == "fsdp" else {}
    policy.train()
    disable_dropout(policy)
    task = make_task(recipe, policy, adapter, info, dtype)
    if len(task.items) < o.prompts_per_step:
        raise UserError(f"{len(task.items)} prompts, fewer than online.prompts_per_step ({o.prompts_per_step})")
    needs_ref = o.algorithm == "pairs" or o.kl_coef > 0
    reference = None  # the live reference: a frozen copy, or (LoRA) the policy with its adapter disabled
    if needs_ref and tr.model.lora is None:
        reference = load_reference(tr, adapter, info.device, load_device=load_device)
        if cfg.strategy == "fsdp":
            reference = shard_fsdp(reference, info, cfg, dtype)
    model = wrap(policy, info, cfg, dtype)  # DDP wrapper, FSDP shards (in place), or the policy itself
    trainable = [p for p in policy.parameters() if p.requires_grad]
    opt = build_optimizer(policy, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(
        s, warmup=cfg.warmup_steps, total=cfg.max_steps, min_ratio=cfg.min_lr / cfg.lr))
    start = checkpoint.resume(run_dir, policy, opt, sched, info=info) if run.resume else 0
    run.begin(step=start)  # the whole recipe on a fresh start (the online section shapes the run)
    record_runtime("train", info, run_dir if info.is_main else None, quiet=quiet, strategy=cfg.strategy,
                   weights=dtype_name(dtype), online=f"{o.algorithm}, {o.prompts_per_step} prompts x {o.samples}"
                   + (f", judges in {o.judge_workers} worker processes" if o.judge_workers else ""), **units)
    log = MetricsLog(run_dir, start_step=start, enabled=info.is_main)
    bar = tqdm(total=cfg.max_steps, initial=start, desc=f"online {o.algorithm}", unit="step",
               disable=quiet or not info.is_main, dynamic_ncols=True)
    adapter.chosen_only = o.algorithm == "grpo"  # GRPO rows are single responses
    try:
        for step in range(start, cfg.max_steps):
            drawn_at = step - step % o.sample_every
            items, cands, timing = sample_batch(task, policy, recipe, drawn_at, info, run_dir, dtype)
            t0 = time.perf_counter()
            records, weights, counts = step_rows(task, o, items, cands)
            # The step's loss is the mean over every process's rows (pairs or candidates), whatever
            # the split: each process scales its sum by world / total, and DDP/FSDP average the
            # gradients over the processes. Rows go through in micro-batches of train.batch_size, the
            # same number on every process (a process with fewer runs zero-count stand-ins), so the
            # collectives of DDP's last backward and of every FSDP forward stay in step.
            total = all_reduce_sum(torch.tensor(sum(counts), dtype=torch.float64, device=info.device))
            scale = info.world / max(float(total), 1.0)
            n_micro = all_reduce_max(math.ceil(len(records) / cfg.batch_size), info.device)
            sums: dict[str, torch.Tensor] = {}
            for k in range(n_micro):
                idx = list(range(k * cfg.batch_size, min((k + 1) * cfg.batch_size, len(records)))) or [0]
                count = torch.tensor([counts[i] if k * cfg.batch_size < len(records) else 0.0 for i in idx],
                                     dtype=torch.float32, device=info.device)
                weight = torch.tensor([weights[i] for i in idx], dtype=torch.float32, device=info.device) * count
                batch = {key: v.to(info.device) for key, v in adapter.collate(
                    [adapter.encode(records[i], f"online step {step + 1}", run_dir) for i in idx]).items()}
                with gradient_sync(model, k == n_micro - 1):
                    with autocast(info.device, dtype):
                        out = model(batch)
                    per, m = row_losses(tr, o, out, batch, weight, reference or policy, info.device, dtype)
                    ((per * count).sum() * scale).backward()
                # m holds means over the micro-batch's rows, which all count 1 (or it is one stand-in)
                parts = {"loss": (per * count).sum().detach(), **{key: v * count.sum() for key, v in m.items()}}
                for key, v in parts.items():
                    sums[key] = sums.get(key, 0.0) + v.to(info.device, torch.float64)
            grad_norm = clip_grad_norm(trainable, cfg.max_grad_norm)
            reduced = all_reduce_sum(torch.stack(list(sums.values()))).tolist()
            means = {key: v / max(float(total), 1.0) for key, v in zip(sums, reduced)}
            if not (math.isfinite(float(grad_norm)) and math.isfinite(means["loss"])):
                raise UserError(f"step {step + 1}: non-finite loss or gradient (loss {means['loss']:g}, grad norm "
                                f"{float(grad_norm):g}); nothing was saved for this step", where=str(run_dir))
            if o.algorithm == "pairs":
                means["pairs"] = float(total)
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            row = _row(cands, means, grad_norm, lr, {**timing, "train_s": time.perf_counter() - t0}, info)
            log.write(step + 1, row)
            bar.set_postfix(reward=f"{row['reward']:.3f}", loss=f"{row['loss']:.4f}")
            bar.update(1)
            save_checkpoint(cfg, run_dir, step + 1, policy, opt, sched, info, last=step + 1 == cfg.max_steps)
    finally:
        task.close()  # judge worker processes
    bar.close()
    return finish(tr, adapter, policy, run_dir, info, dtype, log, panels=PANELS,
                  title=f"online {o.algorithm} ({tr.loss.type if o.algorithm == 'pairs' else 'grpo'})")


def row_losses(tr, o, out, batch, weight: torch.Tensor, reference, device, dtype) -> tuple[torch.Tensor, dict]:
    """Per-row losses of a micro-batch and their metrics (means over its rows). Pairs: the recipe's
    preference loss (reference log-probs from the live reference) plus the chosen NLL; GRPO: the policy
    gradient with `weight` as advantages, plus the KL to the reference when kl_coef > 0."""
    loss = tr.loss
    if o.algorithm == "pairs":
        ref = reference_logps(reference, batch, device, dtype)
        losses, m = preference_loss(out.chosen, out.rejected, ref[0], ref[1], loss_type=loss.type, beta=loss.beta,
                                    r1=loss.r1, r2=loss.r2, gamma=loss.gamma, label_smoothing=loss.label_smoothing)
        if losses.shape[0] == 2 * out.chosen.shape[0]:  # kto_pair: a chosen and a rejected value per pair
            losses = losses.view(2, -1).mean(0)
        return losses + loss.sft_weight * out.chosen_nll, m
    ref = reference_logps(reference, batch, device, dtype)[0] if o.kl_coef > 0 else None
    return grpo_loss(out.chosen, weight, ref_logps=ref, kl_coef=o.kl_coef)


def _row(cands: list[list[dict]], means: dict, grad_norm, lr: float, timing: dict, info) -> dict[str, Any]:
    """One metrics row: rewards over every process's candidates (mean, each group's best and worst), each
    reward term's mean, the step's loss metrics (`means`, already over every process), grad norm, lr,
    and the seconds each phase took (mean over the processes)."""
    flat = [c for g in cands for c in g]
    sums = {"reward": sum(c["reward"] for c in flat), "reward_best": sum(max(c["reward"] for c in g) for g in cands),
            "reward_worst": sum(min(c["reward"] for c in g) for g in cands),
            **{f"term_{k}": sum(c["terms"][k] for c in flat) for k in flat[0]["terms"]},
            "n": len(flat), "groups": len(cands), **{k: v / info.world for k, v in timing.items()}}
    keys = sorted(sums)
    total = dict(zip(keys, all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64,
                                                         device=info.device)).tolist()))
    row = {k: total[k] / total["groups" if k in ("reward_best", "reward_worst") else "n"]
           for k in keys if k.startswith(("reward", "term_"))}
    row.update({k: total[k] for k in timing}, **means, grad_norm=float(grad_norm), lr=lr)
    return row
