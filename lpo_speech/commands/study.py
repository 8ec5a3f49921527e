"""`lpo-speech study STUDY.yaml [--dry-run]`."""

from __future__ import annotations

import argparse

HELP = ("run a study file (data steps, a recipe's variants x seeds, eval sets; resumable) and write its "
        "results page, results.json and plot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="a study file (studies/*.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands it would run, run nothing")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.study import run_study

    run_study(args.study, dry_run=args.dry_run)
    return 0
