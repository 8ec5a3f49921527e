"""`lpo-speech export RUN_DIR OUT [--eval EVAL_DIR ...]`: a trained run as a hub-ready folder."""

from __future__ import annotations

import argparse

HELP = ("write a trained run as a save_pretrained folder with a model card (base model, recipe, eval tables; no "
        "local paths), ready for push_to_hub")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="an `lpo-speech train` run folder (train.out_dir: model/, config.yaml, ...)")
    parser.add_argument("out", help="folder to write (model files, README.md model card, training_curves.png)")
    parser.add_argument("--eval", action="append", default=[], metavar="DIR",
                        help="an `lpo-speech eval --out` folder whose table goes into the card (repeat)")
    parser.add_argument("--name", help="the model's name, the card's title (default: OUT's folder name)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from lpo_speech.export import export_run

    out = export_run(args.run_dir, args.out, evals=args.eval, overwrite=args.overwrite, name=args.name)
    print(f"exported {args.run_dir} -> {out} (model card: {out / 'README.md'}); upload with "
          f"huggingface_hub.upload_folder(repo_id=..., folder_path='{out}')")
    return 0
