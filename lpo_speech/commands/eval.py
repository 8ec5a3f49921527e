"""`lpo-speech eval --wer --model M [--model M2 ...] --data MANIFEST --out DIR`."""

from __future__ import annotations

import argparse

from lpo_speech.commands.args import finite_float, positive_int

HELP = ("evaluate models' error rates (WER, CER, per-utterance WER mean) on a manifest, side by side, each "
        "compared with the first utterance by utterance")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wer", action="store_true", required=True,
                        help="score word/character error rates (the metric family this command computes)")
    parser.add_argument("--model", action="append", required=True, help="model directory or hub id (fetched into the Hugging Face cache); repeat to compare")
    parser.add_argument("--label", action="append", help="names for the models in the table (default: folder names)")
    parser.add_argument("--data", required=True, action="append", metavar="[NAME=]DATA",
                        help="ASR: a JSONL manifest (id, audio, text), a Hugging Face datasets folder or hub id "
                             "(hf:NAME), or a lhotse CutSet manifest; TTS: a prompt manifest (JSONL: id, text). "
                             "A named set (NAME=DATA) goes to OUT/NAME/ (each model in OUT/NAME/LABEL/), and "
                             "OUT/table.md names every set with its size and shows its rate and each model's "
                             "change against the baseline side by side; repeat for several sets (e.g. "
                             "in-domain=test.jsonl out-of-domain=ood_test.jsonl; unnamed ones are named by their "
                             "file stems). One unnamed set (--data DATA) writes OUT/LABEL/ and OUT/table.md")
    parser.add_argument("--baseline", metavar="LABEL",
                        help="the model the others are compared with, utterance by utterance: the change in errors "
                             "and in WER (CER for zh) with its 95%% paired-bootstrap interval and a sign test, in "
                             "the table and as vs_LABEL in OUT/metrics.json (default: the first model)")
    parser.add_argument("--out", required=True, help="output folder")
    ds = parser.add_argument_group("ASR data that is a datasets dataset (converted once into OUT/input/)")
    ds.add_argument("--text-column", default="text", help="the transcript column (default: text)")
    ds.add_argument("--audio-column", default="audio", help="the audio column (default: audio)")
    ds.add_argument("--id-column", help="the id column (default: ids are SPLIT-ROW)")
    ds.add_argument("--split", help="the split to read (default: the dataset's only split)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--beam", type=positive_int, default=1, help="beam size (1 = greedy)")
    parser.add_argument("--lang", default="en", choices=("en", "zh", "cjk", "ja"),
                        help="normalization: en (words) or zh/cjk/ja (characters; the table leads with CER)")
    parser.add_argument("--device", default="auto",
                        help="auto (default: cuda:LOCAL_RANK when CUDA is present, else cpu), cpu, cuda or cuda:N")
    parser.add_argument("--judge-device", help="where judges, scorers and a neural codec run (default: --device)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="the models' weights (auto: bfloat16 on a GPU that supports it, else float32)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads per process (default: torch's)")
    parser.add_argument("--sampling-threads", type=positive_int, metavar="N",
                        help="torch CPU threads while a TTS model samples (default: --threads / torch's); "
                             "1 is fastest for the tiny offline models")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over: discard each model's earlier results in --out made from another model, "
                             "--data or settings, once the new inputs are checked (default: such a rerun stops)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="ASR: leave out (and count: `skipped` in the metrics and the table) rows whose audio "
                             "cannot carry their transcript: longer than the models hear, or far less speech than "
                             "the text needs (docs/formats.md); default: the first such row stops the run")
    parser.add_argument("--quiet", action="store_true")
    tts = parser.add_argument_group("TTS models (codec LM; --data is then a prompt manifest: id, text)")
    tts.add_argument("--temperature", type=finite_float, default=0.0, help="0 = greedy (default); > 0 samples")
    tts.add_argument("--top-p", type=finite_float, default=1.0)
    tts.add_argument("--seed", type=int, default=0)
    tts.add_argument("--max-seconds", type=finite_float, default=12.0, help="length guard per utterance (default 12)")
    tts.add_argument("--ref-audio", help="reference voice for prompts without speaker_audio")
    tts.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (the slowest score)")
    tts.add_argument("--judge", metavar="TYPE:MODEL",
                     help="the ASR judge of the syntheses (default: the bundled Whisper tiny.en, English only): "
                          "faster-whisper:MODEL, transformers-whisper:PATH or funasr:MODEL (e.g. funasr:paraformer-zh)")
    tts.add_argument("--emotion-scorer", metavar="TYPE:WHERE",
                     help="score the emotion or style each prompt asks for (emotion_acc, emotion_score): "
                          "prosody:PATH (a style classifier JSON) or emotion2vec:MODEL (FunASR hub name or dir)")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.asr.sources import InputColumns
    from lpo_speech.evaluate import evaluate_sets

    _, table = evaluate_sets(args.model, args.label, args.data, args.out, baseline=args.baseline,
                       batch_size=args.batch_size, beam=args.beam,
                       lang=args.lang, device=args.device, dtype=args.dtype, quiet=args.quiet, threads=args.threads,
                       overwrite=args.overwrite, skip_bad=args.skip_bad,
                       columns=InputColumns(text=args.text_column, audio=args.audio_column, id=args.id_column,
                                            split=args.split),
                       tts={"temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
                            "ref_audio": args.ref_audio, "dnsmos": not args.no_dnsmos, "max_seconds": args.max_seconds,
                            "emotion": _emotion_spec(args.emotion_scorer), "judge": _judge_spec(args.judge),
                            "judge_device": args.judge_device,
                            "sampling_threads": args.sampling_threads})
    print(table, end="")
    return 0


def _emotion_spec(text: str | None) -> dict | None:
    from lpo_speech.errors import UserError

    if text is None:
        return None
    kind, sep, where = text.partition(":")
    if not sep or not where or kind not in ("prosody", "emotion2vec"):
        raise UserError(f"--emotion-scorer {text!r}: expected prosody:PATH or emotion2vec:MODEL")
    return {"type": kind, "path": where} if kind == "prosody" else {"type": kind, "model": where}


def _judge_spec(text: str | None) -> dict | None:
    from lpo_speech.errors import UserError

    if text is None:
        return None
    kind, sep, where = text.partition(":")
    if not sep or not where or kind not in ("faster-whisper", "transformers-whisper", "funasr"):
        raise UserError(f"--judge {text!r}: expected faster-whisper:MODEL, transformers-whisper:PATH or funasr:MODEL")
    return {"type": kind, "path": where} if kind == "transformers-whisper" else {"type": kind, "model": where}
