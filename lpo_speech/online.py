"""Online training (`online:` in a track recipe): the policy samples, the judges score, the policy trains.

Read top to bottom like lpo_speech.trainer, whose pieces it shares (optimizer, schedule, wrapping,
checkpoints, saving). Each optimizer step s:

  1. prompts   the next `online.prompts_per_step` prompts of a seeded permutation per epoch (a
               function of (train.seed, s) alone), split over the processes; each process samples
               and scores its share on its own device;
  2. sample    every `sample_every` steps the current policy draws `online.samples` candidates per
               prompt (the track's sampler: batched KV-cache sampling for codec LMs, Whisper's
               decoder for ASR), seeded by (train.seed, s, prompt); the steps between reuse them;
  3. score     the recipe's judges score every candidate in batches (lpo_speech.tts.scoring for TTS,
               WER/CER for ASR) and lpo_speech.rewards turns the scores into one reward each;
  4. signal    `algorithm: pairs`: per prompt, the best-rewarded candidate is chosen and the worst
               rejected (skipped when the gap is at most `min_reward_gap`), trained with `loss`
               (LPO, DPO, ...; reference log-probs from the live reference); `algorithm: grpo`: each
               prompt's candidates are a group, their rewards become advantages
               (lpo_speech.losses.group_advantages) and the loss is lpo_speech.losses.grpo_loss;
  5. update    backward, clip, a non-finite check, optimizer and schedule step, log, checkpoint.

Every sampled batch is kept in `<out_dir>/samples/step-<s>.rank<r>.jsonl` (candidates, scores,
rewards), so a run can be inspected, and a resumed run (checkpoints hold weights, optimizer,
schedule and RNG; the log is cut back) reuses the batch it was training on: a killed online run
resumed gives the losses of an uninterrupted one (tested). `metrics.jsonl` adds per step the mean
reward, each reward term's mean, the pairs used (pairs) or the KL (grpo), and the seconds spent
sampling, scoring and training; `training_curves.png` plots them.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from lpo_speech import checkpoint
from lpo_speech.adapters import load_adapter
from lpo_speech.distributed import all_reduce_mean, init_distributed, record_runtime
from lpo_speech.errors import UserError
from lpo_speech.losses import group_advantages, grpo_loss, preference_loss
from lpo_speech.parallel import clip_grad_norm, with_full_weights, wrap
from lpo_speech.policy import disable_dropout, load_policy, load_reference
from lpo_speech.precision import autocast, dtype_name
from lpo_speech.records import PreferencePair
from lpo_speech.recipe import TrackRecipe, save_recipe
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


def sample_batch(task: OnlineTask, policy, recipe: TrackRecipe, step: int, info, run_dir: Path) -> tuple[list, list, dict]:
    """This rank's items and their scored candidates for `step` (reused from its samples file when
    the run already drew them), plus timings."""
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
    item, one zero-weight pair keeps every process's forward and backward in step (DDP)."""
    pairs, weights = [], []
    for item, group in zip(items, cands):
        ranked = sorted(group, key=lambda c: c["reward"], reverse=True)
        if ranked[0]["reward"] - ranked[-1]["reward"] > min_gap:
            pairs.append(task.record(item, ranked[0], ranked[-1]))
            weights.append(1.0)
    if not pairs:
        pairs, weights = [task.record(items[0], cands[0][0], cands[0][-1])], [0.0]
    return pairs, weights


def train_online(recipe: TrackRecipe, *, resume: bool = False, quiet: bool = False) -> Path:
    o, tr = recipe.online, recipe.train_recipe()
    cfg = tr.train
    info = init_distributed(tr.runtime.device)
    if tr.runtime.threads:
        torch.set_num_threads(tr.runtime.threads)
    run_dir = Path(cfg.out_dir)
    if info.is_main and checkpoint.latest(run_dir) is not None and not resume:
        raise UserError(f"{run_dir}: holds checkpoints of an earlier run; pass --resume to continue it "
                        "or set train.out_dir to a new folder")
    seed_all(cfg.seed)
    adapter = load_adapter(tr.model)
    adapter.average = tr.loss.average_logps
    policy, dtype = load_policy(tr, adapter, info.device)
    policy.train()
    disable_dropout(policy)
    task = make_task(recipe, policy, adapter, info, dtype)
    if len(task.items) < o.prompts_per_step:
        raise UserError(f"{len(task.items)} prompts, fewer than online.prompts_per_step ({o.prompts_per_step})")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, run_dir / "config.yaml")  # the whole recipe: the online section shapes the run
    record_runtime("train", info, run_dir if info.is_main else None, quiet=quiet, strategy=cfg.strategy,
                   weights=dtype_name(dtype), online=f"{o.algorithm}, {o.prompts_per_step} prompts x {o.samples}"
                   + (f", judges in {o.judge_workers} worker processes" if o.judge_workers else ""))
    needs_ref = o.algorithm == "pairs" or o.kl_coef > 0
    reference = None  # the live reference: a frozen copy, or (LoRA) the policy with its adapter disabled
    if needs_ref and tr.model.lora is None:
        reference = load_reference(tr, adapter, info.device)
    model = wrap(policy, info, cfg, dtype)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    opt = build_optimizer(policy, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(
        s, warmup=cfg.warmup_steps, total=cfg.max_steps, min_ratio=cfg.min_lr / cfg.lr))
    start = 0
    if resume and (ckpt := checkpoint.latest(run_dir)) is not None:
        start = checkpoint.load_checkpoint(ckpt, policy, opt, sched, rank=info.rank, device=info.device)
    log = MetricsLog(run_dir, start_step=start, enabled=info.is_main)
    bar = tqdm(total=cfg.max_steps, initial=start, desc=f"online {o.algorithm}", unit="step",
               disable=quiet or not info.is_main, dynamic_ncols=True)
    try:
        for step in range(start, cfg.max_steps):
            drawn_at = step - step % o.sample_every
            items, cands, timing = sample_batch(task, policy, recipe, drawn_at, info, run_dir)
            t0 = time.perf_counter()
            if o.algorithm == "pairs":
                records, weights = best_vs_worst(task, items, cands, o.min_reward_gap)
            else:
                records = [task.record(it, c, None) for it, group in zip(items, cands) for c in group]
                weights = group_advantages(torch.tensor([c["reward"] for g in cands for c in g]), o.samples,
                                           normalize=o.normalize).tolist()
            adapter.chosen_only = o.algorithm == "grpo"  # GRPO rows are single responses
            batch = {k: v.to(info.device) for k, v in adapter.collate(
                [adapter.encode(r, f"online step {step + 1}", run_dir) for r in records]).items()}
            w = torch.tensor(weights, dtype=torch.float32, device=info.device)
            with autocast(info.device, dtype):
                out = model(batch)
            if o.algorithm == "pairs":
                ref = reference_logps(reference or policy, batch, info.device, dtype)
                losses, m = preference_loss(out.chosen, out.rejected, ref[0], ref[1], loss_type=tr.loss.type,
                                            beta=tr.loss.beta, r1=tr.loss.r1, r2=tr.loss.r2, gamma=tr.loss.gamma,
                                            label_smoothing=tr.loss.label_smoothing)
                per = losses + tr.loss.sft_weight * out.chosen_nll
                loss = (per * w).sum() / w.sum().clamp(min=1.0)
                m["pairs"] = w.sum()
            else:
                ref = reference_logps(reference or policy, batch, info.device, dtype)[0] if o.kl_coef > 0 else None
                losses, m = grpo_loss(out.chosen, w, ref_logps=ref, kl_coef=o.kl_coef)
                loss = losses.mean()
            loss.backward()
            grad_norm = clip_grad_norm(trainable, cfg.max_grad_norm)
            if not torch.isfinite(grad_norm + loss.detach()).item():
                raise UserError(f"step {step + 1}: non-finite loss or gradient (loss {float(loss):g}, grad norm "
                                f"{float(grad_norm):g}); nothing was saved for this step", where=str(run_dir))
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            row = _row(cands, loss, m, grad_norm, lr, {**timing, "train_s": time.perf_counter() - t0}, info)
            log.write(step + 1, row)
            bar.set_postfix(reward=f"{row['reward']:.3f}", loss=f"{row['loss']:.4f}")
            bar.update(1)
            save_checkpoint(cfg, run_dir, step + 1, policy, opt, sched, info, last=step + 1 == cfg.max_steps)
    finally:
        task.close()  # judge worker processes
    bar.close()
    return finish(tr, adapter, policy, run_dir, info, dtype, log, panels=PANELS,
                  title=f"online {o.algorithm} ({tr.loss.type if o.algorithm == 'pairs' else 'grpo'})")


def _row(cands: list[list[dict]], loss, m: dict, grad_norm, lr: float, timing: dict, info) -> dict[str, Any]:
    """One metrics row, averaged over the processes: rewards (mean, each group's best and worst), each
    reward term's mean, the loss and its metrics, grad norm, lr and seconds."""
    flat = [c for g in cands for c in g]
    values = {"reward": sum(c["reward"] for c in flat) / len(flat),
              "reward_best": sum(max(c["reward"] for c in g) for g in cands) / len(cands),
              "reward_worst": sum(min(c["reward"] for c in g) for g in cands) / len(cands),
              **{f"term_{k}": sum(c["terms"][k] for c in flat) / len(flat) for k in flat[0]["terms"]},
              "loss": float(loss.detach()), **{k: float(v) for k, v in m.items()}, "grad_norm": float(grad_norm),
              **timing}
    keys = sorted(values)
    reduced = all_reduce_mean(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device))
    row = {k: float(v) for k, v in zip(keys, reduced.tolist())}
    row["lr"] = lr
    return row
