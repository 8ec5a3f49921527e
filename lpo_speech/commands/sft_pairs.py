"""`lpo-speech sft-pairs MANIFEST OUT`: an ASR manifest as chosen-only SFT examples (records.write_sft_examples)."""

from __future__ import annotations

import argparse

HELP = ("write an ASR manifest ({id, audio, text}) as chosen-only SFT examples for `loss.type: sft`: the SFT "
        "stage before preference training, or the SFT baseline on the same data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="ASR manifest (JSONL: id, audio, text)")
    parser.add_argument("out", metavar="OUT", help="pair file to write (JSONL: id, audio relative to OUT, chosen_text)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lpo_speech.errors import UserError
    from lpo_speech.records import write_sft_examples

    if Path(args.out).exists() and not args.overwrite:
        raise UserError(f"{args.out} exists (--overwrite replaces it)")
    n = write_sft_examples(args.manifest, args.out)
    print(f"sft-pairs: {n} SFT examples -> {args.out}")
    return 0
