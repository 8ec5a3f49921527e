"""`lpo-speech train RECIPE [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse

HELP = "train a model on preference pairs with LPO (or DPO, IPO, ...) from a YAML recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/tts/tiny.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields, e.g. train.lr=1e-6")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.hub import preflight
    from lpo_speech.recipes import load_any_recipe, load_train_recipe
    from lpo_speech.trainer import train

    preflight(load_any_recipe(args.recipe, args.overrides), "train", args.recipe)
    recipe = load_train_recipe(args.recipe, args.overrides)
    run_dir = train(recipe, resume=args.resume, quiet=args.quiet)
    print(f"trained model: {run_dir / 'model'}  (curves: {run_dir / 'training_curves.png'})")
    return 0
