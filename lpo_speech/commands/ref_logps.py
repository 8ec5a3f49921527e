"""`lpo-speech ref-logps RECIPE --in PAIRS --out PAIRS_WITH_REF`."""

from __future__ import annotations

import argparse

from lpo_speech.commands.args import finite_float, positive_int

HELP = "precompute reference log-probs into a pair file (training then needs no reference model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="the training recipe: its model is the reference, its loss settings "
                                       "(average_logps, codebook_reduction) decide the reduction")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    parser.add_argument("--in", dest="inp", required=True, help="pair JSONL without reference log-probs")
    parser.add_argument("--out", required=True, help="pair JSONL to write (atomic; resumable)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="pairs per forward pass (default 8)")
    parser.add_argument("--max-margin", type=finite_float, default=None,
                        help="drop pairs with logp_ref(chosen) - logp_ref(rejected) above this (the LPO authors use 2.0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over: discard an earlier --out (and its unfinished rows) made from other inputs "
                             "or settings, once the new inputs are checked (default: such a rerun stops)")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.recipe import load_train_recipe
    from lpo_speech.reflogps import compute_ref_logps

    recipe = load_train_recipe(args.recipe, args.overrides)
    stats = compute_ref_logps(recipe, args.inp, args.out, batch_size=args.batch_size,
                              max_margin=args.max_margin, quiet=args.quiet, overwrite=args.overwrite)
    if stats["kept"] or stats["pairs"]:
        print(f"ref-logps: {stats['kept']} of {stats['pairs']} pairs written to {args.out}"
              + (f" ({stats['dropped_margin']} dropped by --max-margin)" if args.max_margin is not None else ""))
    return 0
