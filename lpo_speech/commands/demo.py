"""`lpo-speech demo [--out runs/demo]`."""

from __future__ import annotations

import argparse

HELP = "run the offline end-to-end demo (ASR, TTS and emotion: data, pairs, LPO training, evaluation); resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--tracks", default="asr,tts,emotion", help="comma list of asr, tts, emotion (default all)")
    parser.add_argument("--n-train", type=int, default=200, help="ASR training utterances")
    parser.add_argument("--n-test", type=int, default=60, help="ASR held-out utterances")
    parser.add_argument("--n-tts-prompts", type=int, default=96, help="TTS and emotion prompts sampled for pairs")
    parser.add_argument("--n-tts-test", type=int, default=60, help="TTS and emotion held-out prompts")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.demo import run_demo

    tracks = tuple(t.strip() for t in args.tracks.split(",") if t.strip())
    run_demo(args.out, n_train=args.n_train, n_test=args.n_test, tracks=tracks, n_tts_prompts=args.n_tts_prompts,
             n_tts_test=args.n_tts_test)
    return 0
