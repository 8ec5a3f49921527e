"""`lpo-speech build-pairs RECIPE [key=value ...]`."""

from __future__ import annotations

import argparse
import json

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
    print(json.dumps(stats, indent=2))
    ref = "with reference log-probs" if recipe.reference.source == "precomputed" else "(reference run by the trainer)"
    print(f"pairs {ref}: {recipe.data.pairs}")
    return 0
