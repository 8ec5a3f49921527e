"""`lpo-speech demo [--out runs/demo]`."""

from __future__ import annotations

import argparse

from lpo_speech.commands.args import positive_int

HELP = ("run the offline end-to-end demo (ASR, TTS and emotion: data, pairs, LPO training, evaluation in "
        "and out of domain); resumable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--tracks", default="asr,tts,emotion", help="comma list of asr, tts, emotion (default all)")
    parser.add_argument("--n-train", type=positive_int, default=300, help="ASR utterances the SFT stage trains on")
    parser.add_argument("--n-pairs", type=positive_int, default=150, help="ASR utterances the pairs are built from")
    parser.add_argument("--n-test", type=positive_int, default=60, help="ASR held-out utterances per set")
    parser.add_argument("--n-tts-prompts", type=positive_int, default=96, help="TTS prompts sampled for pairs")
    parser.add_argument("--n-emotion-prompts", type=positive_int, default=72, help="styled prompts sampled for pairs")
    parser.add_argument("--n-tts-test", type=positive_int, default=40, help="TTS and emotion held-out prompts per set")
    parser.add_argument("--jobs", type=positive_int, default=3,
                        help="tracks run side by side in this many processes, one torch thread each (default 3: "
                             "every track at once); 1 runs them one after another")
    parser.add_argument("--part", action="store_true", help=argparse.SUPPRESS)  # a lane started by --jobs 2


def run(args: argparse.Namespace) -> int:
    from lpo_speech.demo import run_demo

    tracks = tuple(t.strip() for t in args.tracks.split(",") if t.strip())
    run_demo(args.out, tracks=tracks, jobs=args.jobs, part=args.part, n_train=args.n_train, n_pairs=args.n_pairs,
             n_test=args.n_test, n_tts_prompts=args.n_tts_prompts,
             n_emotion_prompts=args.n_emotion_prompts, n_tts_test=args.n_tts_test)
    return 0
