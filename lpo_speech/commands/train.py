"""`lpo-speech train RECIPE [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse
import os

HELP = "train a model on preference pairs with LPO (or DPO, IPO, ...) from a YAML recipe"
SMOKE_STEPS, SMOKE_ONLINE_STEPS, SMOKE_PAIRS, SMOKE_MIN_LR = 20, 3, 16, 1e-5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/tts/tiny.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields, e.g. train.lr=1e-6")
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a first run that proves the plumbing, not the quality: {SMOKE_STEPS} steps (online: "
                             f"{SMOKE_ONLINE_STEPS}) on the first {SMOKE_PAIRS} pairs, no warmup, a constant lr of at "
                             f"least {SMOKE_MIN_LR:g}, no checkpoints, into train.out_dir + '-smoke'; it ends saying "
                             "whether the model learned from the pairs")
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
    if args.smoke:  # the smoke settings on top of the user's (they need the recipe's own lr and folder)
        recipe = load_any_recipe(args.recipe, [*args.overrides, *smoke_overrides(recipe)])
    preflight(recipe, "train", args.recipe)
    if getattr(recipe, "online", None) is not None or getattr(recipe, "rounds", None) is not None:
        if getattr(recipe, "online", None) is not None:  # sample, score and train in one loop
            from lpo_speech.online import train_online as run_track
        else:  # build pairs and train, round after round
            from lpo_speech.rounds import train_rounds as run_track
        run_dir = run_track(recipe, resume=args.resume, quiet=args.quiet)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"trained model: {run_dir / 'model'}  (curves: {run_dir / 'training_curves.png'})")
            if args.smoke:
                print(smoke_report(run_dir, recipe))
        return 0
    recipe = train_view(recipe)
    run = train_soup if recipe.train.seeds else train  # train.seeds: one run per seed, then their average
    run_dir = run(recipe, resume=args.resume, quiet=args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # one line for the run, not one per process
        curves = run_dir / ("seed-*" if recipe.train.seeds else "") / "training_curves.png"
        soup = f"the average of {len(recipe.train.seeds)} runs; " if recipe.train.seeds else ""
        print(f"trained model: {run_dir / 'model'}  ({soup}curves: {curves})")
        if args.smoke:
            print(smoke_report(run_dir, recipe))
    return 0


def smoke_overrides(recipe) -> list[str]:
    """`--smoke`: enough steps on a few pairs, at a rate that moves the weights, to show the pipeline
    trains; nothing kept that a real run would want (no checkpoints, its own folder)."""
    from lpo_speech.errors import UserError

    t = recipe.train
    if getattr(recipe, "rounds", None) is not None:
        raise UserError("--smoke is for one training run; smoke-test a rounds recipe without its rounds: section")
    if t.seeds:
        raise UserError("--smoke trains one run: drop train.seeds (set train.seeds=[])")
    online = getattr(recipe, "online", None) is not None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    lr = f"{max(t.lr, SMOKE_MIN_LR):.6e}"  # with a dot: YAML reads 1e-05 as text
    return [f"train.max_steps={SMOKE_ONLINE_STEPS if online else SMOKE_STEPS}", "train.warmup_steps=0",
            f"train.lr={lr}", f"train.min_lr={lr}", "train.save_every=0", "train.save_optimizer=false",
            "train.log_every=1", f"train.out_dir={t.out_dir.rstrip('/')}-smoke",
            *([] if online else [f"data.limit={max(SMOKE_PAIRS, t.batch_size * t.grad_accum * world)}"])]


def smoke_report(run_dir, recipe) -> str:
    """The end of a smoke run: did the model learn from the pairs (the metrics' first and last steps),
    recorded as `smoke` in the run's runtime.json (export warns about smoke runs)."""
    import json

    from lpo_speech.trainer import read_metrics

    rows = read_metrics(run_dir)
    first, last = rows[0], rows[-1]
    keys = [k for k in ("loss", "margin", "accuracy", "reward") if k in first]
    moved = (last.get("margin", 0) > first.get("margin", 0) + 1e-3 or last["loss"] < first["loss"] - 1e-4
             or last.get("reward", 0) > first.get("reward", 0))
    runtime = run_dir / "runtime.json"
    record = json.loads(runtime.read_text()) if runtime.is_file() else {}
    record["smoke"] = {"steps": len(rows), "lr": recipe.train.lr, "pairs": getattr(recipe.data, "limit", 0),
                       "moved": moved, "first": {k: first[k] for k in keys}, "last": {k: last[k] for k in keys}}
    runtime.write_text(json.dumps(record, indent=2) + "\n")
    change = ", ".join(f"{k} {first[k]:.3f} -> {last[k]:.3f}" for k in keys)
    verdict = ("the model learned from these pairs: data, model, loss and optimizer are wired up" if moved else
               "the model did NOT move on these pairs: check the pairs (chosen vs rejected) and train.lr")
    return (f"smoke run: {len(rows)} steps at lr {recipe.train.lr:g} -> {run_dir}: {change}; {verdict}. A smoke run "
            "checks the plumbing, not the quality: drop --smoke for the real run.")
