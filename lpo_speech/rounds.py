"""Offline rounds (`rounds:` in a track recipe): build pairs from the current policy, train, repeat.

Round k (1..n) takes the k-th slice of `rounds.prompts_per_round` prompts (TTS: `build_pairs.prompts`;
ASR: the utterances of `build_pairs.manifest`), and in `<train.out_dir>/round-k/`:

  prompts.jsonl   that slice (paths made absolute, so the copy reads the same files)
  pairs/          build-pairs from the round's starting model (the recipe's build_pairs settings):
                  candidates, pairs.jsonl, summary.json, then pairs_ref.jsonl with reference log-probs
                  of `rounds.reference`: the round's starting model (round_start) or the recipe's
                  model.path for every round (sft)
  train/          `lpo-speech train` of the round's starting model on those pairs (the recipe's loss
                  and train settings); its model/ starts the next round

Each stage resumes as it does alone (and a finished round is skipped), so an interrupted run continues
with `--resume`. The run folder then holds `model/` (the last round's), `metrics.jsonl` (every round's
steps in sequence, with a `round` field), `training_curves.png`, `rounds.json` (per round: prompts, pairs,
steps, model) and `config.yaml` (the whole recipe).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from lpo_speech.asr.sources import InputColumns, prepare_manifest
from lpo_speech.distributed import init_distributed
from lpo_speech.errors import UserError
from lpo_speech.records import AsrUtterance, TtsPrompt, load_jsonl, resolve_audio, write_jsonl_atomic
from lpo_speech.recipe import TrackRecipe, build_pairs
from lpo_speech.reflogps import compute_ref_logps
from lpo_speech.run_folder import RunFolder
from lpo_speech.stages import atomic_folder
from lpo_speech.training_log import plot_metrics


def _items(recipe: TrackRecipe, out: Path) -> list:
    """Every prompt (TTS) or utterance (ASR, its input converted as build-pairs does), paths absolute."""
    bp = recipe.build_pairs
    if recipe.track == "asr":
        cols = InputColumns(text=bp.text_column, audio=bp.audio_column, id=bp.id_column, split=bp.split)
        manifest = prepare_manifest(bp.manifest, out / "input", cols)
        utts = load_jsonl(manifest, AsrUtterance)
        for u in utts:
            u.audio = str(resolve_audio(manifest, u.audio).resolve())
        return utts
    prompts = load_jsonl(bp.prompts, TtsPrompt)
    for p in prompts:
        if p.speaker_audio:
            p.speaker_audio = str(resolve_audio(bp.prompts, p.speaker_audio).resolve())
    return prompts


def _round_recipe(recipe: TrackRecipe, rd: Path, start_model: str) -> TrackRecipe:
    """The recipe of one round: its prompts, work folders and starting model; pairs without reference
    log-probs (they are added from `rounds.reference` next)."""
    bp = recipe.build_pairs
    where = {"manifest": str(rd / "prompts.jsonl")} if recipe.track == "asr" else {"prompts": str(rd / "prompts.jsonl"),
                                                                                  "limit": 0}
    return replace(recipe, rounds=None, model=replace(recipe.model, path=start_model),
                   build_pairs=replace(bp, work_dir=str(rd / "pairs"), **where),
                   data=replace(recipe.data, pairs=str(rd / "pairs" / "pairs_noref.jsonl")),
                   reference=replace(recipe.reference, source="model"),
                   train=replace(recipe.train, out_dir=str(rd / "train")))


def train_rounds(recipe: TrackRecipe, *, resume: bool = False, quiet: bool = False) -> Path:
    info = init_distributed(recipe.runtime.device)
    # One run at a time in the folder; a resume only with the run's own settings (lpo_speech.run_folder).
    with RunFolder(recipe.train.out_dir, recipe, info, resume=resume, marker="round-*") as run:
        return _train_rounds(recipe, run, quiet=quiet)


def _train_rounds(recipe: TrackRecipe, run: RunFolder, *, quiet: bool) -> Path:
    from lpo_speech.checkpoint import latest
    from lpo_speech.trainer import read_metrics, train

    r, out = recipe.rounds, run.path
    fresh = not run.started()
    items = _items(recipe, out)
    need = r.n * r.prompts_per_round
    if len(items) < need:
        raise UserError(f"{len(items)} prompts, fewer than rounds.n x rounds.prompts_per_round ({need})",
                        where="rounds")
    done = sum((out / f"round-{k}" / "train" / "model" / "config.json").is_file() for k in range(1, r.n + 1))
    run.begin(step=done, fresh=fresh, at=f"round {done + 1}")
    current, summary, rows = recipe.model.path, [], []
    for k in range(1, r.n + 1):
        rd = out / f"round-{k}"
        if not quiet:
            print(f"\n== round {k}/{r.n}: {r.prompts_per_round} prompts from {current}", flush=True)
        rd.mkdir(exist_ok=True)
        if not (rd / "prompts.jsonl").is_file():
            write_jsonl_atomic(rd / "prompts.jsonl", items[(k - 1) * r.prompts_per_round:k * r.prompts_per_round])
        step = _round_recipe(recipe, rd, current)
        stats = build_pairs(step, quiet=quiet)
        if not stats.get("pairs_written"):
            raise UserError(f"round {k}: build-pairs kept no pair (its rules' counts: {rd / 'pairs' / 'summary.json'})")
        train_recipe = step.train_recipe()
        ref_model = current if r.reference == "round_start" else recipe.model.path
        ref_recipe = replace(train_recipe, model=replace(train_recipe.model, path=ref_model),
                             reference=replace(train_recipe.reference, source="precomputed"))
        ref_out = rd / "pairs" / "pairs_ref.jsonl"
        ref = compute_ref_logps(ref_recipe, step.data.pairs, ref_out, batch_size=step.build_pairs.batch_size,
                                max_margin=step.build_pairs.max_ref_margin, quiet=quiet, restart_if_changed=True)
        run = rd / "train"
        trained = replace(train_recipe, data=replace(train_recipe.data, pairs=str(ref_out)),
                          reference=replace(train_recipe.reference, source="precomputed"))
        if not (run / "model" / "config.json").is_file():
            train(trained, resume=latest(run) is not None, quiet=quiet)
        metrics = read_metrics(run)
        base = rows[-1]["step"] if rows else 0
        rows += [{**m, "step": base + m["step"], "round": k} for m in metrics]
        summary.append({"round": k, "prompts": r.prompts_per_round, "start_model": current, "reference": ref_model,
                        "pairs": ref["kept"], "candidates": stats.get("candidates"), "steps": len(metrics),
                        "model": str(run / "model")})
        current = str(run / "model")
    with atomic_folder(out / "model") as tmp:
        shutil.copytree(current, tmp, dirs_exist_ok=True)
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in rows))
    (out / "rounds.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_metrics(out / "metrics.jsonl", out / "training_curves.png",
                 title=f"{r.n} rounds of {recipe.loss.type} (reference: {r.reference})")
    return out
