"""`lpo-speech make-asr-data`: synthesize an offline ASR train/test set (see lpo_speech.data.synth)."""

from __future__ import annotations

import argparse

from lpo_speech.commands.args import non_negative_int, positive_int

HELP = "synthesize ASR train/test manifests + 16 kHz wavs offline (piper + espeak-ng, resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (train.jsonl, test.jsonl, wavs/)")
    parser.add_argument("--n-train", type=non_negative_int, default=2000, help="training utterances (default 2000)")
    parser.add_argument("--n-test", type=non_negative_int, default=200, help="held-out utterances (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="sentence and style seed (default 0)")
    parser.add_argument("--workers", type=positive_int, default=2, help="synthesis processes (default 2)")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.commands.args import check_out_folder
    from lpo_speech.data.synth import make_asr_data

    check_out_folder(args.out)
    stats = make_asr_data(args.out, args.n_train, args.n_test, seed=args.seed, workers=args.workers)
    print(f"made {stats['train']} train + {stats['test']} test utterances in {stats['seconds']} s "
          f"(already present ones skipped) -> {args.out}/train.jsonl, {args.out}/test.jsonl")
    return 0
