"""`lpo-speech merge --model A --model B ... --out M`: average runs trained from one start (lpo_speech.merge);
`lpo-speech merge --adapter RUN/adapter --out M`: fold a LoRA adapter into its base (lpo_speech.lora)."""

from __future__ import annotations

import argparse

HELP = ("average the weights of runs trained from the same model (a model soup; --base/--weight pull it "
        "back), or fold a LoRA adapter into its base model (--adapter)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", help="a trained model folder (repeat)")
    parser.add_argument("--adapter", help="a LoRA adapter folder (a run's adapter/, or model/ with model.lora.save "
                                          "adapter): write the base model with the adapter merged in")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--base", help="the model the runs started from (needed for --weight); with --adapter, "
                                       "the base model (default: the one the adapter names)")
    parser.add_argument("--weight", type=float, default=1.0,
                        help="merged = base + weight * (mean - base); 1.0 (default) is the plain mean")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="with --adapter: dtype of the merged weights (default float32)")
    parser.add_argument("--device", default="auto",
                        help="where the arithmetic runs: auto (default: cuda:LOCAL_RANK when CUDA is present, else cpu), "
                             "cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lpo_speech.errors import UserError

    if (args.model is None) == (args.adapter is None):
        raise UserError("merge: give --model folders (a soup) or one --adapter, not both")
    if args.adapter is not None:
        from lpo_speech.lora import merge_adapter
        from lpo_speech.precision import DTYPES

        out = Path(args.out)
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise UserError("exists and is not empty (pass --overwrite to replace it)", where=str(out))
        merge_adapter(args.adapter, out, base=args.base, dtype=DTYPES[args.dtype], device=args.device)
        print(f"merged adapter {args.adapter} into its base -> {out}")
        return 0
    from lpo_speech.merge import merge_models

    out = merge_models(args.model, args.out, base=args.base, weight=args.weight, overwrite=args.overwrite,
                       device=args.device)
    print(f"merged {len(args.model)} models -> {out}")
    return 0
