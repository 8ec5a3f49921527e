"""`lpo-speech make-asr-data`: synthesize an offline ASR train/test set (see lpo_speech.synthetic.synth)."""

from __future__ import annotations

import argparse

from lpo_speech.commands.args import finite_float, non_negative_int, positive_int

HELP = "synthesize ASR train/test manifests + 16 kHz wavs offline (piper + espeak-ng, resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (train.jsonl, test.jsonl, wavs/)")
    parser.add_argument("--n-train", type=non_negative_int, default=2000, help="training utterances (default 2000)")
    parser.add_argument("--n-test", type=non_negative_int, default=200, help="held-out utterances (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="sentence and style seed (default 0)")
    parser.add_argument("--natural-share", type=finite_float, default=0.0,
                        help="share of train utterances whose sentence is natural English from the package's "
                             "natural train pool instead of the grammar (default 0)")
    parser.add_argument("--ood", action="store_true",
                        help="write only the out-of-domain held-out sets ood_dev.jsonl / ood_test.jsonl: natural "
                             "sentences never trained on, in voices and channels no training item uses "
                             "(train/test are left as they are)")
    parser.add_argument("--n-ood-dev", type=non_negative_int, default=None, help="with --ood: dev utterances (default 160)")
    parser.add_argument("--n-ood-test", type=non_negative_int, default=None,
                        help="with --ood: test utterances (default 160)")
    parser.add_argument("--workers", type=positive_int, default=2, help="synthesis processes (default 2)")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.commands.args import check_out_folder
    from lpo_speech.synthetic.synth import make_asr_data, make_ood_asr_data
    from lpo_speech.errors import UserError

    check_out_folder(args.out)
    if not args.ood and (args.n_ood_dev is not None or args.n_ood_test is not None):
        raise UserError("--n-ood-dev / --n-ood-test size the out-of-domain sets: add --ood")
    if args.ood:
        if args.natural_share:
            raise UserError("--natural-share mixes training data; --ood makes only held-out sets")
        n_dev, n_test = (160 if n is None else n for n in (args.n_ood_dev, args.n_ood_test))
        stats = make_ood_asr_data(args.out, n_dev, n_test, seed=args.seed, workers=args.workers)
        print(f"made {stats['ood_dev']} ood_dev + {stats['ood_test']} ood_test utterances in {stats['seconds']} s "
              f"(already present ones skipped) -> {args.out}/ood_dev.jsonl, {args.out}/ood_test.jsonl")
        return 0
    stats = make_asr_data(args.out, args.n_train, args.n_test, seed=args.seed, workers=args.workers,
                          natural_share=args.natural_share)
    print(f"made {stats['train']} train + {stats['test']} test utterances in {stats['seconds']} s "
          f"(already present ones skipped) -> {args.out}/train.jsonl, {args.out}/test.jsonl")
    return 0
