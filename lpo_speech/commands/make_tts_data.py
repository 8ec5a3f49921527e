"""`lpo-speech make-tts-data`: the offline TTS world (see lpo_speech.tts.world)."""

from __future__ import annotations

import argparse

from lpo_speech.commands.args import finite_float, non_negative_int, positive_int

HELP = "synthesize a piper corpus, encode it with Codec2 700C into codec-LM examples + prompt manifests (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True,
                        help="output folder (train/dev/test.jsonl, *_prompts.jsonl including the out-of-domain "
                             "ood_*_prompts.jsonl, ref/)")
    parser.add_argument("--n-train", type=non_negative_int, default=2600, help="training utterances (default 2600)")
    parser.add_argument("--n-dev", type=non_negative_int, default=100, help="development utterances (default 100)")
    parser.add_argument("--n-test", type=non_negative_int, default=200, help="held-out utterances (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="sentence seed (default 0)")
    parser.add_argument("--style-share", type=finite_float, default=0.0,
                        help="share of train items rendered in a non-neutral style (high, low; default 0)")
    parser.add_argument("--natural-share", type=finite_float, default=0.0,
                        help="share of train items whose sentence is natural English from the package's natural "
                             "train pool instead of the grammar (default 0)")
    parser.add_argument("--limit", action="append", default=[], metavar="SPLIT=N",
                        help="synthesize only the first N items of SPLIT (train, dev, test, test_style); the "
                             "splits stay those of the full sizes, so held-out sentences stay held out (repeatable)")
    parser.add_argument("--phoneme-sync", action="store_true",
                        help="phoneme-synchronous responses: each prompt phoneme written before its frames "
                             "(piper's alignment; needs the onnx package)")
    parser.add_argument("--workers", type=positive_int, default=2, help="synthesis processes (default 2)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip judging the test split (piper and Codec2 ceiling)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import json

    import torch  # noqa: F401  (before ctranslate2)

    from lpo_speech.commands.args import check_out_folder
    from lpo_speech.errors import UserError
    from lpo_speech.tts.world import make_tts_data

    check_out_folder(args.out)
    limits = {}
    for item in args.limit:
        name, sep, k = item.partition("=")
        if not sep or not k.strip().isdigit():
            raise UserError(f"--limit {item!r}: expected SPLIT=N, e.g. test=60")
        limits[name.strip()] = int(k)

    stats = make_tts_data(args.out, args.n_train, args.n_test, n_dev=args.n_dev, seed=args.seed, style_share=args.style_share, limits=limits,
                          workers=args.workers, ceiling=not args.no_ceiling, progress=not args.quiet,
                          phoneme_sync=args.phoneme_sync, natural_share=args.natural_share)
    print(json.dumps(stats, indent=2))
    return 0
