"""`lpo-speech init-codec-lm --out DIR`: a randomly initialised codec LM (see lpo_speech.tts.model)."""

from __future__ import annotations

import argparse

HELP = "create a random codec-LM TTS model (Llama over text + codec tokens) to train with `lpo-speech train`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="model folder to create")
    parser.add_argument("--tokenizer", help="tokenizer.json of the data (default: the piper phoneme table)")
    parser.add_argument("--size", default="tiny", help="tiny (~3.6M parameters) | small (~10M) | test")
    parser.add_argument("--max-positions", type=int, default=1024, help="longest prompt + audio, in tokens")
    parser.add_argument("--hidden-size", type=int, help="override the size's hidden width")
    parser.add_argument("--layers", type=int, help="override the size's layer count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists and is not empty (default: stop, --out untouched)")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.stages import check_new_folder
    from lpo_speech.tts.model import init_codec_lm, num_parameters
    from lpo_speech.tts.text import TtsTokenizer

    check_new_folder(args.out, overwrite=args.overwrite)
    tok = TtsTokenizer.load(args.tokenizer) if args.tokenizer else TtsTokenizer()
    out = init_codec_lm(args.out, tok, size=args.size, seed=args.seed, max_positions=args.max_positions,
                        hidden_size=args.hidden_size, num_hidden_layers=args.layers, overwrite=args.overwrite)
    print(f"codec LM ({num_parameters(out) / 1e6:.2f}M parameters, vocabulary {tok.vocab_size}) -> {out}")
    return 0
