"""Precompute reference log-probs into the pair file, so training holds no reference model.

Sharded across processes and resumable (lpo_speech.stages): the rows are guarded by fingerprints of the
model and the pair file, so a rerun never mixes two runs, and every pair's audio is checked before
anything is written. Optional filter from the LPO authors' pipeline: drop pairs whose reference
already prefers the chosen side by more than `max_margin` (logp_ref(chosen) - logp_ref(rejected) >
max_margin): they carry little signal.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from lpo_speech.adapters import load_adapter
from lpo_speech.asr.features import pair_features
from lpo_speech.recipe import TrainRecipe
from lpo_speech.distributed import barrier, init_distributed, record_runtime
from lpo_speech.errors import UserError
from lpo_speech.lora import adapter_disabled
from lpo_speech.policy import load_policy
from lpo_speech.precision import autocast, compute_tag, dtype_name, resolve_dtype
from lpo_speech.records import PreferencePair, load_jsonl, rebase_audio, resolve_audio, write_jsonl_atomic
from lpo_speech.stages import (OVERWRITE_HINT, check_settings, created_outputs, input_file, model_folder,
                               record_settings, run_sharded, settings_path)
from lpo_speech.trainer import ref_logp_mode

# The layout of a scored row and how it is computed: raise it when either changes, so an output made by
# older code is not resumed as if this code had made it.
SCHEMA = 1


def _batch_order(p: PreferencePair) -> tuple:
    """Cheap batching order: pairs of one audio stay together (its encoder runs once per batch);
    token pairs go by length (less padding)."""
    if p.audio is not None:
        return (0,)  # stable sort keeps the file order, where pairs of one utterance are adjacent
    return (len(p.prompt_tokens or []) + max(len(p.chosen_tokens or []), len(p.rejected_tokens or [])),)


def check_pair_audio(pairs: list[PreferencePair], in_path: Path) -> None:
    """Every distinct audio of a pair file readable, non-empty and finite (lpo_speech.audio), before
    anything is written; errors name the pair file's line, as the adapters' own would mid-stage. Audio
    with features in the pair file's feature store was checked when they were stored (build-pairs does
    that first) and is not decoded again; the rest is decoded here, each process its share."""
    from lpo_speech.asr.features import audio_key, decode_file, each_share, features_folder, stored_keys

    stored = stored_keys(features_folder(in_path)) if any(p.audio is not None for p in pairs) else set()
    seen: set[Path] = set()
    todo = []
    for i, p in enumerate(pairs, 1):
        if p.audio is None:
            continue
        path = resolve_audio(in_path, p.audio)
        if path not in seen:
            seen.add(path)
            if audio_key(path) not in stored:
                todo.append((path, f"{in_path}:{i}"))
    each_share(todo, lambda item: decode_file(*item))


def ref_logps_settings(recipe: TrainRecipe, in_path: str | Path, dtype: torch.dtype) -> dict:
    """What makes a pair's reference log-probs: the model (by content), the pair file (by content), the
    reduction, the compute path (dtype and strategy: lpo_speech.precision.compute_tag), LoRA wrapping,
    the model's prompt options when set, and SCHEMA."""
    m = recipe.model
    return {"model": model_folder(m.path), "pairs": input_file(in_path), "mode": ref_logp_mode(recipe),
            "dtype": ref_compute_tag(recipe, dtype), "lora": asdict(m.lora) if m.lora else None, "schema": SCHEMA,
            **{k: getattr(m, k) for k in ("language", "task", "instruction") if getattr(m, k, None) is not None}}


def ref_compute_tag(recipe: TrainRecipe, dtype: torch.dtype) -> str:
    """The compute path the recipe's training will take (lpo_speech.precision.compute_tag)."""
    return compute_tag(dtype, strategy=recipe.train.strategy, lora=recipe.model.lora is not None)


def compute_ref_logps(recipe: TrainRecipe, in_path: str | Path, out_path: str | Path, *, batch_size: int = 8,
                      max_margin: float | None = None, quiet: bool = False, overwrite: bool = False,
                      restart_if_changed: bool = False) -> dict[str, int]:
    """Write `out_path`: the pairs of `in_path` with reference log-probs. Rows are scored into
    `<out>.scored` (sharded, resumable) and written to `out_path` at the end, with
    `<out>.settings.json` (what made it). A rerun into an output made from other inputs or settings
    stops in one line, unless `overwrite` (start over) or `restart_if_changed` (build-pairs: the pair
    file is its own, rewritten whenever its selection rules change)."""
    info = init_distributed(recipe.runtime.device)
    in_path, out_path = Path(in_path), Path(out_path)
    pairs = load_jsonl(in_path, PreferencePair)
    if not pairs:
        raise UserError("no pairs", where=str(in_path))
    check_pair_audio(pairs, in_path)  # every input checked before the model loads and anything is written
    dtype = resolve_dtype(recipe.model.dtype, info.device)
    scored_path = out_path.with_name(out_path.name + ".scored")
    scored_settings = ref_logps_settings(recipe, in_path, dtype)
    made_by = {**scored_settings, "max_margin": max_margin}
    if not (overwrite or restart_if_changed):  # an earlier output of other inputs stops before the model loads
        check_settings(out_path, scored_settings, path=settings_path(scored_path), record=False, hint=OVERWRITE_HINT)
        check_settings(out_path, made_by, record=False, hint=OVERWRITE_HINT)
    adapter = load_adapter(recipe.model)
    adapter.average = recipe.loss.average_logps
    # The policy exactly as the trainer loads it (dtype, LoRA, master copy): these are its step-0 log-probs.
    model, dtype = load_policy(recipe, adapter, info.device)
    tag = ref_compute_tag(recipe, dtype)
    if tag == "bfloat16-weights":  # the bf16 copies FSDP will gather (weights only, not buffers such as
        for p in model.parameters():  # rotary frequencies); exact: the weights were loaded in bf16
            p.data = p.data.to(torch.bfloat16)
    model.eval()
    record_runtime("ref-logps", info, quiet=quiet, weights=dtype_name(dtype))
    mode = ref_logp_mode(recipe)
    line_of = {p.id: i for i, p in enumerate(pairs, 1)}
    encoded: dict[str, dict] = {}

    def encode(p: PreferencePair) -> dict:
        if p.id not in encoded:
            encoded[p.id] = adapter.encode(p, f"{in_path}:{line_of[p.id]}", in_path.parent)
        return encoded[p.id]

    def process(chunk: list[PreferencePair]) -> list[dict]:
        batch = {k: v.to(info.device) for k, v in adapter.collate([encode(p) for p in chunk]).items()}
        with torch.no_grad(), adapter_disabled(model), autocast(info.device, dtype):
            out = model(batch)
        rows = []
        for p, c, r in zip(chunk, out.chosen.float().tolist(), out.rejected.float().tolist()):
            if not (math.isfinite(c) and math.isfinite(r)):
                raise UserError(f"pair {p.id!r}: non-finite reference log-prob (chosen {c}, rejected {r})",
                                where=f"{in_path}:{line_of[p.id]}")
            moved = rebase_audio(PreferencePair.from_dict(p.to_dict()), in_path.parent, out_path.parent)
            rows.append({**moved.to_dict(), "ref_chosen_logp": c, "ref_rejected_logp": r, "ref_logp_mode": mode,
                         "ref_logp_dtype": tag})
        return rows

    # ASR: every audio's features in the store beside the pair file first, each process its share (pairs
    # of one audio may land on different processes below); a failure removes what this stage stored.
    with created_outputs(out_path.parent), pair_features(adapter, in_path, pairs, quiet=quiet):
        # With overwrite (or a changed pair file under restart_if_changed) the finished output and its
        # record go too, so a run that then stops midway resumes without asking again.
        scored = run_sharded(scored_path, pairs, key=lambda p: p.id, process=process, batch_size=batch_size,
                             desc="ref-logps", unit="pair", device=recipe.runtime.device, quiet=quiet,
                             order=_batch_order, settings=scored_settings, overwrite=overwrite,
                             restart_if_changed=restart_if_changed, also=[out_path, settings_path(out_path)])
        kept = [s for s in scored
                if max_margin is None or s["ref_chosen_logp"] - s["ref_rejected_logp"] <= max_margin]
        barrier()  # every rank has read the scored file
        if info.is_main:
            write_jsonl_atomic(out_path, kept)
            record_settings(out_path, made_by)
            scored_path.unlink(missing_ok=True)
            settings_path(scored_path).unlink(missing_ok=True)
    return {"pairs": len(pairs), "kept": len(kept), "dropped_margin": len(scored) - len(kept)}


def store_pairs(recipe: TrainRecipe, pairs: list[PreferencePair], work: Path, *, batch_size: int,
                max_margin: float | None, quiet: bool = False, overwrite: bool = False) -> dict:
    """The last step of every track's build-pairs: `work/pairs.jsonl` (the selected pairs, written by
    rank 0), then `data.pairs` for training: with their reference log-probs (computed here, sharded;
    reference log-probs of an earlier selection are recomputed, not refused, since pairs.jsonl is the
    stage's own), or as they are when the trainer runs the reference itself (`reference.source: model`).
    Returns the counts for summary.json (`dropped_ref_margin`, `pairs_written`)."""
    info = init_distributed(recipe.runtime.device)
    out = Path(recipe.data.pairs)
    if info.is_main:  # under torchrun every rank selected the same pairs; one writes them
        write_jsonl_atomic(work / "pairs.jsonl", pairs)
    barrier()
    if not pairs:
        return {"dropped_ref_margin": 0, "pairs_written": 0}
    if recipe.reference.source == "model":
        if info.is_main and out.absolute() != (work / "pairs.jsonl").absolute():  # else: already there
            write_jsonl_atomic(out, [rebase_audio(p, work, out.parent) for p in pairs])
            settings_path(out).unlink(missing_ok=True)  # it holds no reference log-probs now
        barrier()
        return {"dropped_ref_margin": 0, "pairs_written": len(pairs)}
    ref = compute_ref_logps(recipe, work / "pairs.jsonl", out, batch_size=batch_size, max_margin=max_margin,
                            quiet=quiet, overwrite=overwrite, restart_if_changed=True)
    return {"dropped_ref_margin": ref["dropped_margin"], "pairs_written": ref["kept"]}
