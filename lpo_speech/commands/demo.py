"""`lpo-speech demo [--out runs/demo]`."""

from __future__ import annotations

import argparse

HELP = "run the offline end-to-end demo (data, pairs, LPO training, evaluation); resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--n-train", type=int, default=200, help="ASR training utterances")
    parser.add_argument("--n-test", type=int, default=60, help="ASR held-out utterances")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.demo import run_demo

    run_demo(args.out, n_train=args.n_train, n_test=args.n_test)
    return 0
