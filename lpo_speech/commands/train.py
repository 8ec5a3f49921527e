"""`lpo-speech train RECIPE [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse
import os

HELP = "train a model on preference pairs with LPO (or DPO, IPO, ...) from a YAML recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/tts/tiny.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields, e.g. train.lr=1e-6")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    plan = parser.add_argument_group("memory plan (lpo_speech.plan)")
    plan.add_argument("--plan", action="store_true",
                      help="print the GPU memory estimate of this recipe and exit (reads only the model's config)")
    plan.add_argument("--plan-gpus", action="append", metavar="N",
                      help="GPU counts to plan for (repeatable; default: the visible GPUs, else 1 and 8)")
    plan.add_argument("--plan-gpu-gb", metavar="GB", help="memory per GPU in GiB (default: the visible GPU's, else 80)")
    plan.add_argument("--plan-model", metavar="PRESET",
                      help="plan with a preset config standing in for model.path (e.g. llasa-1b, llasa-8b)")


def run(args: argparse.Namespace) -> int:
    if args.plan:  # no hub preflight, no weights, no run folder
        from lpo_speech.plan import recipe_plan
        from lpo_speech.recipe import load_train_recipe

        print(recipe_plan(load_train_recipe(args.recipe, args.overrides), preset=args.plan_model,
                          gpus=args.plan_gpus, gpu_gb=args.plan_gpu_gb))
        return 0
    if args.plan_gpus or args.plan_gpu_gb or args.plan_model:
        from lpo_speech.errors import UserError

        raise UserError("--plan-gpus, --plan-gpu-gb and --plan-model go with --plan")
    from lpo_speech.hub import preflight
    from lpo_speech.recipe import load_any_recipe, train_view
    from lpo_speech.soup import train_soup
    from lpo_speech.trainer import train

    recipe = load_any_recipe(args.recipe, args.overrides)  # parsed once
    preflight(recipe, "train", args.recipe)
    if getattr(recipe, "online", None) is not None or getattr(recipe, "rounds", None) is not None:
        if getattr(recipe, "online", None) is not None:  # sample, score and train in one loop
            from lpo_speech.online import train_online as run_track
        else:  # build pairs and train, round after round
            from lpo_speech.rounds import train_rounds as run_track
        run_dir = run_track(recipe, resume=args.resume, quiet=args.quiet)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"trained model: {run_dir / 'model'}  (curves: {run_dir / 'training_curves.png'})")
        return 0
    recipe = train_view(recipe)
    run = train_soup if recipe.train.seeds else train  # train.seeds: one run per seed, then their average
    run_dir = run(recipe, resume=args.resume, quiet=args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # one line for the run, not one per process
        curves = run_dir / ("seed-*" if recipe.train.seeds else "") / "training_curves.png"
        soup = f"the average of {len(recipe.train.seeds)} runs; " if recipe.train.seeds else ""
        print(f"trained model: {run_dir / 'model'}  ({soup}curves: {curves})")
    return 0
