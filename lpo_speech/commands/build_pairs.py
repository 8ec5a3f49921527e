"""`lpo-speech build-pairs RECIPE [key=value ...]`."""

from __future__ import annotations

import argparse
import os

HELP = "sample and score candidates, select chosen/rejected pairs, precompute reference log-probs (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a track recipe (track: asr or tts) with a build_pairs section")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over: discard the candidates (and reference log-probs) in build_pairs.work_dir "
                             "made from another model, manifest or settings, once the new inputs are checked "
                             "(default: such a rerun stops)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="ASR: leave out (and count, in summary.json's `skipped`) manifest lines whose audio "
                             "cannot carry their transcript: longer than the model hears, or far less speech than "
                             "the text needs (docs/formats.md); default: the first such line stops the stage")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.errors import UserError
    from lpo_speech.hub import preflight
    from lpo_speech.recipe import build_pairs, load_any_recipe

    recipe = load_any_recipe(args.recipe, args.overrides)
    preflight(recipe, "build-pairs", args.recipe)
    if getattr(recipe, "track", None) is None:
        raise UserError(f"{args.recipe}: no `track:` key; build-pairs needs a track recipe (track: asr or tts)")
    stats = build_pairs(recipe, quiet=args.quiet, overwrite=args.overwrite, skip_bad=args.skip_bad)
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary_line(recipe, stats))
    return 0


# ASR candidate sources that run the model (perturbations of the gold text are made without it; every
# TTS candidate is the model's speech).
MODEL_SOURCES = ("greedy", "sample", "beam")


def summary_line(recipe, stats: dict) -> str:
    """What the stage did with what, in one line: the model loaded or not, candidates by kind, pairs
    kept, reference log-probs computed or not, and where the pairs went (summary.json has the counts)."""
    from pathlib import Path

    by_source = stats.get("candidates_by_source") or {}
    ran = recipe.track == "tts" or any(k.startswith(MODEL_SOURCES) and n for k, n in by_source.items())
    precomputed = recipe.reference.source == "precomputed"
    if ran or precomputed:
        uses = ", ".join([*(["candidates"] if ran else []), *(["reference log-probs"] if precomputed else [])])
        model = f"model {recipe.model.path} loaded ({uses})"
    else:
        model = f"model {recipe.model.path} not loaded (candidates made from the text alone)"
    unit = "prompts" if "prompts" in stats else "utterances"
    kinds = ", ".join(f"{n} {k}" for k, n in by_source.items())
    skipped = f" ({stats['skipped']} skipped: --skip-bad)" if stats.get("skipped") else ""
    ref = ("with reference log-probs" if precomputed else
           "without reference log-probs (reference.source model: the trainer runs the reference)")
    where = Path(recipe.build_pairs.work_dir) / "summary.json"
    return (f"build-pairs: {stats.get(unit, 0)} {unit}{skipped}; {model}; {stats.get('candidates', 0)} candidates"
            f"{f' ({kinds})' if kinds else ''}; {stats.get('pairs_written', 0)} pairs written {ref} to "
            f"{recipe.data.pairs} (each rule's counts: {where})")
