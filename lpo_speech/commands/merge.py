"""`lpo-speech merge --model A --model B ... --out M`: average runs trained from one start (lpo_speech.merge)."""

from __future__ import annotations

import argparse

HELP = "average the weights of runs trained from the same model (a model soup; --base/--weight pull it back)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, help="a trained model folder (repeat)")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--base", help="the model the runs started from (needed for --weight)")
    parser.add_argument("--weight", type=float, default=1.0,
                        help="merged = base + weight * (mean - base); 1.0 (default) is the plain mean")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.merge import merge_models

    out = merge_models(args.model, args.out, base=args.base, weight=args.weight, overwrite=args.overwrite)
    print(f"merged {len(args.model)} models -> {out}")
    return 0
