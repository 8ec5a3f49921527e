"""`lpo-speech import-tts-lm SRC DST --layout llasa`: a hub codec-token TTS model as a codec LM
(see lpo_speech.tts.hub_lm and the "Hub layout" of lpo_speech.tts.text)."""

from __future__ import annotations

import argparse

HELP = ("import a hub codec-token TTS model (Llasa: Llama + XCodec2 speech tokens) so eval --wer, build-pairs "
        "and train run on it: writes the model (safetensors) and its tokenizer to DST, with the token layout "
        "as `tts` in config.json")

EPILOG = """\
layout llasa (HKUSTAudio/Llasa-1B, -3B, -8B): the prompt is the tokenizer's chat template over the user
message "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>" with the
assistant turn opened by <|SPEECH_GENERATION_START|>, rendered once (date pinned) and stored as
tts.prompt_template; a prompt's emotion or style is written before its text as "(happy) " (tts.emotion_template:
Llasa has no control tokens); the response is speech tokens <|s_0|>.. (contiguous ids; codec id c is
tts.codec_offset + c) ending with <|SPEECH_GENERATION_END|> (tts.eos_id). The codec's code count must equal
the number of speech tokens (XCodec2: 65,536).

example:
  lpo-speech import-tts-lm HKUSTAudio/Llasa-1B runs/llasa-1b --layout llasa --codec hf:hf-audio/xcodec2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("src", metavar="SRC",
                        help="hub id (needs network access or the hub cache) or local model folder")
    parser.add_argument("dst", metavar="DST", help="new output folder (written whole or not at all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DST if it exists and is not empty (default: stop, DST untouched)")
    from lpo_speech.tts.hub_lm import LAYOUTS  # data only: no heavy imports

    parser.add_argument("--layout", default="llasa", choices=sorted(LAYOUTS),
                        help="token layout preset (default: llasa)")
    parser.add_argument("--codec", metavar="CODEC",
                        help="codec spec stored with the model: hf:HUB_ID_OR_FOLDER (transformers XCodec2, EnCodec, "
                             "DAC, Mimi, X-codec) or codec2:MODE (default for llasa: hf:hf-audio/xcodec2)")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.stages import check_new_folder
    from lpo_speech.tts.hub_lm import import_tts_lm

    check_new_folder(args.dst, overwrite=args.overwrite)
    info = import_tts_lm(args.src, args.dst, layout=args.layout, codec=args.codec, overwrite=args.overwrite)
    print(f"import-tts-lm: {info['src']} -> {info['dst']} (layout {info['layout']}, {info['speech_tokens']} speech "
          f"tokens from id {info['codec_offset']}, eos {info['eos_id']}, codec {info['codec']}"
          + (f", from {info['origin']}" if info["origin"] else "") + ")")
    return 0
