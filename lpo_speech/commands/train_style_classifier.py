"""`lpo-speech train-style-classifier --data DIR --out FILE` (see lpo_speech.tts.style_classifier)."""

from __future__ import annotations

import argparse

HELP = "train the offline world's style classifier (prosody -> style) and check it on held-out styled speech"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a world made by make-tts-data with --style-share > 0")
    parser.add_argument("--out", required=True, help="classifier JSON to write")
    parser.add_argument("--min-accuracy", type=float, default=0.9, help="held-out accuracy required (default 0.9)")
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import json

    from lpo_speech.tts.style_classifier import train_style_classifier

    info = train_style_classifier(args.data, args.out, min_accuracy=args.min_accuracy, c=args.c,
                                  progress=not args.quiet)
    print(json.dumps(info, indent=2))
    print(f"style classifier -> {args.out}")
    return 0
