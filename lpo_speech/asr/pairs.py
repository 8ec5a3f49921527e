"""`lpo-speech build-pairs` for ASR: candidates, WER ranking, pair selection, reference log-probs.

Stages, each resumable and written atomically under `build_pairs.work_dir`:
  1. candidates.jsonl  one line per utterance: the reference and its candidates, each scored (WER,
                       CER against the reference). Sources: the model's greedy transcript, samples
                       (model-based), beam N-best, and perturbations of the reference. Sharded across
                       processes under torchrun.
  2. pairs.jsonl       chosen = the reference (gold) or the best candidate; rejected = distinct
                       candidates whose WER exceeds the chosen's by at least `min_margin`, up to
                       `max_pairs_per_utterance` (worst first: clear errors carry the most signal).
  3. data.pairs        the same pairs with reference log-probs (lpo_speech.reflogps), optionally
                       dropping those whose reference margin exceeds `max_ref_margin`.
summary.json counts what each rule kept; runtime.json says where it ran (every rank's device, the
model's dtype, threads; printed at the start, written with the results). Every audio of the manifest is
decoded once, checked and turned into the model's features, kept in `work_dir/features/`
(lpo_speech.asr.features; under torchrun each process does its share) for the candidates' decoding,
the reference log-probs and training; its speech is measured then too, and every line's audio checked
against its transcript (lpo_speech.asr.audio_check: longer than the model hears, or far less speech
than the text needs, stops the stage, or with `skip_bad` (--skip-bad) is left out and counted in
summary.json's `skipped`). Then what an earlier run left in work_dir is compared (model and
manifest by content, lpo_speech.stages), before anything else is written: a rerun from other inputs
stops in one line unless `overwrite` (--overwrite). A failed run removes the features it computed.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import torch

from lpo_speech.perturb import build_vocabulary, perturbations
from lpo_speech.asr.recipe import AsrRecipe
from lpo_speech.asr.audio_check import announce, check_utterances, speech_seconds, stored_measure
from lpo_speech.asr.features import FeatureStore, features_folder
from lpo_speech.asr.sources import InputColumns, converted_manifest, row_namer
from lpo_speech.distributed import init_distributed, record_runtime
from lpo_speech.wer import normalize, utterance_errors
from lpo_speech.precision import dtype_name, resolve_dtype
from lpo_speech.records import (AsrUtterance, Candidate, PreferencePair, load_numbered, resolve_audio)
from lpo_speech.reflogps import store_pairs
from lpo_speech.stages import (OVERWRITE_HINT, check_settings, created_outputs, input_file, model_folder, run_sharded,
                               set_threads)

# What makes a candidate (with the model and the manifest): a rerun into the same work_dir must keep
# these (lpo_speech.stages.check_settings); the selection rules may change freely.
CANDIDATE_SETTINGS = ("lang", "greedy", "samples", "temperature", "top_p", "beams", "perturbations", "perturb_rate",
                      "seed")
# The layout of a candidates row and how it is made: raise it when either changes, so candidates made
# by older code are not resumed as if this code had made them.
SCHEMA = 1


def uses_model(recipe: AsrRecipe) -> bool:
    """Whether any candidate is decoded by the model (perturbations alone need none)."""
    bp = recipe.build_pairs
    return bool(bp.greedy or bp.samples or bp.beams)


def candidate_settings(recipe: AsrRecipe, dtype: torch.dtype) -> dict:
    """What made candidates.jsonl (lpo_speech.stages): the model and the manifest by content, the
    candidate settings, the model's prompt options when set (Whisper's language/task, an audio LLM's
    instruction), the schema, a non-float32 decoding dtype, and for decoded candidates the features' dtype."""
    bp, m = recipe.build_pairs, recipe.model
    return {"model": model_folder(m.path), "manifest": input_file(bp.manifest), "schema": SCHEMA,
            **{f: getattr(bp, f) for f in CANDIDATE_SETTINGS},
            **{k: getattr(m, k) for k in ("language", "task", "instruction") if getattr(m, k, None) is not None},
            # bfloat16 decodes other candidates; float32 (every run before dtypes were kept) adds no key
            **({"dtype": dtype_name(dtype)} if uses_model(recipe) and dtype != torch.float32 else {}),
            # the model decodes the stored float16 features (before the store: float32 ones, no key)
            **({"features": "float16"} if uses_model(recipe) else {})}


def generate_candidates(recipe: AsrRecipe, utts: list[AsrUtterance], quiet: bool = False,
                        overwrite: bool = False) -> list[dict]:
    bp = recipe.build_pairs
    vocabulary = build_vocabulary([u.text for u in utts], bp.lang)
    # This rank's device by the placement rule (under torchrun: cuda:LOCAL_RANK), weights in model.dtype.
    info = init_distributed(recipe.runtime.device)
    dtype = resolve_dtype(recipe.model.dtype, info.device)
    decoder = None
    if uses_model(recipe):
        from lpo_speech.asr.decode import make_asr_decoder

        decoder = make_asr_decoder(recipe.model.path, info.device, dtype=dtype, model_cfg=recipe.model)
        decoder.adapter.use_features(features_folder(Path(bp.work_dir) / "pairs.jsonl"))  # filled by _build_pairs

    def process(batch: list[AsrUtterance]) -> list[dict]:
        hyps: dict[str, list[tuple[str, str]]] = {u.id: [] for u in batch}
        if decoder is not None:
            states = decoder.encode_files([resolve_audio(bp.manifest, u.audio) for u in batch],
                                          [f"{bp.manifest}: id {u.id}" for u in batch])  # shared by every decoding below
            if bp.greedy:
                for u, texts in zip(batch, decoder.transcribe(states=states)):
                    hyps[u.id] += [("greedy", t) for t in texts]
            if bp.beams:
                for u, texts in zip(batch, decoder.transcribe(states=states, n=bp.beams, num_beams=bp.beams)):
                    hyps[u.id] += [("beam", t) for t in texts]
            if bp.samples:
                torch.manual_seed(random.Random(f"{bp.seed}:{batch[0].id}").randrange(2**31))
                for u, texts in zip(batch, decoder.transcribe(states=states, n=bp.samples, do_sample=True,
                                                              temperature=bp.temperature, top_p=bp.top_p)):
                    hyps[u.id] += [("sample", t) for t in texts]
        rows = []
        for u in batch:
            hyps[u.id] += [("perturb", t) for t in perturbations(u.text, vocabulary, n=bp.perturbations,
                                                                 rate=bp.perturb_rate, seed=f"{bp.seed}:{u.id}",
                                                                 lang=bp.lang)]
            cands = []
            for k, (source, text) in enumerate(hyps[u.id]):
                errs = utterance_errors(u.text, text, bp.lang)
                cands.append(Candidate(id=f"{u.id}/{source}{k}", prompt_id=u.id, source=source, text=text,
                                       scores={"wer": errs["wer"], "cer": errs["cer"]}).to_dict())
            rows.append({"id": u.id, "audio": u.audio, "reference": u.text, "candidates": cands})
        return rows

    # After the model loaded (a broken one leaves no record behind): settings recorded, earlier output
    # discarded with overwrite.
    return run_sharded(Path(bp.work_dir) / "candidates.jsonl", utts, key=lambda u: u.id, process=process,
                       batch_size=bp.batch_size, desc="candidates", unit="utt", device=recipe.runtime.device,
                       quiet=quiet, settings=candidate_settings(recipe, dtype), overwrite=overwrite)


def select_pairs(recipe: AsrRecipe, rows: list[dict]) -> tuple[list[PreferencePair], dict]:
    bp = recipe.build_pairs
    pairs_dir = Path(bp.work_dir)  # audio paths relative to work_dir/pairs.jsonl
    stats = {"utterances": len(rows), "candidates": 0, "duplicates": 0, "within_margin": 0,
             "over_per_utterance_cap": 0, "utterances_without_pair": 0, "pairs": 0}
    by_source: dict[str, int] = {}
    pairs = []
    for row in rows:
        cands = [Candidate.from_dict(c) for c in row["candidates"]]
        stats["candidates"] += len(cands)
        for c in cands:
            by_source[c.source] = by_source.get(c.source, 0) + 1
        unique: dict[str, Candidate] = {}
        for c in cands:  # one candidate per distinct normalized text
            key = normalize(c.text or "", bp.lang)
            if key in unique:
                stats["duplicates"] += 1
            else:
                unique[key] = c
        if bp.chosen == "reference":
            chosen_text, chosen_wer = row["reference"], 0.0
            unique.pop(normalize(row["reference"], bp.lang), None)  # a correct hypothesis is not a rejected one
        else:
            best = min(unique.values(), key=lambda c: c.scores["wer"])
            chosen_text, chosen_wer = best.text, best.scores["wer"]
        worse = [c for c in unique.values() if c.scores["wer"] >= chosen_wer + bp.min_margin]
        stats["within_margin"] += len(unique) - len(worse) - (1 if bp.chosen == "best" else 0)
        worse.sort(key=lambda c: (-c.scores["wer"], c.id))
        stats["over_per_utterance_cap"] += max(0, len(worse) - bp.max_pairs_per_utterance)
        if not worse:
            stats["utterances_without_pair"] += 1
        audio = resolve_audio(bp.manifest, row["audio"])
        for c in worse[:bp.max_pairs_per_utterance]:
            pairs.append(PreferencePair(
                id=f"{c.id}", prompt_id=row["id"], audio=os.path.relpath(audio, pairs_dir),
                chosen_text=chosen_text, rejected_text=c.text, chosen_scores={"wer": chosen_wer},
                rejected_scores=dict(c.scores), extra={"rejected_source": c.source}))
    stats["pairs"] = len(pairs)
    stats["candidates_by_source"] = by_source
    return pairs, stats


def build_asr_pairs(recipe: AsrRecipe, *, quiet: bool = False, overwrite: bool = False, skip_bad: bool = False) -> dict:
    """`overwrite`: discard candidates (and reference log-probs) made from another model, manifest or
    settings instead of stopping, once the new inputs are checked. `skip_bad`: leave out (and count)
    lines whose audio cannot carry their transcript instead of stopping (lpo_speech.asr.audio_check). A
    manifest that is a `datasets` dataset or a lhotse CutSet is converted into `work_dir/input/` first
    (lpo_speech.asr.sources)."""
    bp = recipe.build_pairs
    set_threads(recipe.runtime.threads)
    init_distributed(recipe.runtime.device)  # before any model: each rank on its own device
    cols = InputColumns(text=bp.text_column, audio=bp.audio_column, id=bp.id_column, split=bp.split)
    name = row_namer(bp.manifest, cols)  # how the audio check names a line: the source's own rows
    with converted_manifest(bp.manifest, Path(bp.work_dir) / "input", cols, overwrite=overwrite, quiet=quiet) as manifest:
        recipe = replace(recipe, build_pairs=replace(bp, manifest=str(manifest)))
        return _build_pairs(recipe, quiet=quiet, overwrite=overwrite, skip_bad=skip_bad, name=name)


def _build_pairs(recipe: AsrRecipe, *, quiet: bool, overwrite: bool, skip_bad: bool = False, name=None) -> dict:
    bp = recipe.build_pairs
    work = Path(bp.work_dir)
    info = init_distributed(recipe.runtime.device)
    dtype = resolve_dtype(recipe.model.dtype, info.device)
    numbered = load_numbered(bp.manifest, AsrUtterance)
    extractor = _feature_extractor(recipe.model.path)
    with created_outputs(work, Path(recipe.data.pairs).parent):
        # Every input checked before anything but features is written: the manifest, then every audio
        # (readable, finite; decoded once, into the model's features, which every later stage reads, and
        # its speech measured), then every audio against its transcript (audio_check), then what an
        # earlier run left in work_dir. A failure removes the features this run stored.
        store = FeatureStore(features_folder(work / "pairs.jsonl"), extractor)
        with store.discard_on_error():
            store.fill([(resolve_audio(bp.manifest, u.audio), f"{bp.manifest}: id {u.id}") for _, u in numbered],
                       quiet=quiet, speech=speech_seconds)
            checked = check_utterances(numbered, bp.manifest, window=store.window, measure=stored_measure(store),
                                       skip_bad=skip_bad, name=name)
            utts = checked.kept
            if not overwrite:
                check_settings(work / "candidates.jsonl", candidate_settings(recipe, dtype), record=False,
                               hint=OVERWRITE_HINT)
            if info.is_main:
                announce(checked, "build-pairs")
            where = dict(weights=dtype_name(dtype), threads=torch.get_num_threads())
            record_runtime("build-pairs", info, quiet=quiet, **where)  # said now, written with the results
            rows = generate_candidates(recipe, utts, quiet=quiet, overwrite=overwrite)
            pairs, stats = select_pairs(recipe, rows)
            if skip_bad:  # how many lines the audio check left out, beside the utterances used
                stats = {"utterances": stats.pop("utterances"), "skipped": len(checked.skipped), **stats}
            stats.update(store_pairs(recipe.train_recipe(), pairs, work, batch_size=bp.batch_size,
                                     max_margin=bp.max_ref_margin, quiet=quiet, overwrite=overwrite))
            if info.is_main:
                (work / "summary.json").write_text(json.dumps(stats, indent=2))
            # runtime.json describes the run that made summary.json: a failed rerun leaves the earlier one.
            record_runtime("build-pairs", info, work, quiet=True, **where)
    return stats


def _feature_extractor(path: str):
    from transformers import AutoFeatureExtractor

    from lpo_speech.adapters.causal_lm import load_pretrained

    return load_pretrained(AutoFeatureExtractor, path)
