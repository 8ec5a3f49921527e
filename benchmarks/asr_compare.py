"""ASR quality comparison on the offline world: base vs SFT vs DPO vs LPO (two r2), same pairs, same budget.

The chosen side of the demo's pairs is the gold transcript, so plain SFT on those transcripts for
the same number of steps is the honest baseline: a gain over the base model may be nothing but
fine-tuning. Every run uses the demo recipe's hyperparameters (lr, schedule, batch, steps, frozen
encoder); only the loss changes. Encoder states are computed once and shared (frozen encoder).

    .venv/bin/python benchmarks/asr_compare.py  # -> benchmarks/results/asr_compare.{json,md}

One command: it first runs the demo's ASR stage (data, base model, pairs, the recipe's own LPO run and
its eval, each skipped when done) in `--out`, then the other runs, then one side-by-side eval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = {  # label -> recipe overrides (the recipe as committed, lpo-ste r2=0.3, is the demo stage's run)
    "sft": ["loss.type=sft", "loss.sft_weight=1.0", "loss.gamma=0.0"],
    "dpo (sigmoid)": ["loss.type=sigmoid", "loss.gamma=0.0"],
    "lpo-ste r2=1.0": ["loss.type=lpo-ste", "loss.r2=1.0"],
    "lpo-ste r2=3.0": ["loss.type=lpo-ste", "loss.r2=3.0"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "runs" / "asr_compare"))
    ap.add_argument("--n-train", type=int, default=200, help="training utterances (pairs come from these)")
    ap.add_argument("--n-test", type=int, default=120, help="held-out utterances")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "asr_compare"))
    ap.add_argument("--only", action="append", help="run only these labels")
    ap.add_argument("--confirm", type=int, default=240,
                    help="fresh held-out utterances for a second eval of every model (0 = none): the recipe's "
                         "r2 was picked on the first held-out set, so this set checks it on unseen sentences")
    args = ap.parse_args()

    from lpo_speech.adapters import load_adapter
    from lpo_speech.demo import asr_stage
    from lpo_speech.steps import run_command
    from lpo_speech.evaluate import evaluate, markdown_table
    from lpo_speech.recipe import load_train_recipe
    from lpo_speech.trainer import read_metrics, train

    out = Path(args.out)
    stage = asr_stage(out, n_train=args.n_train, n_test=args.n_test)
    asr = out / "asr"
    recipe_path = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"
    base = [f"model.path={asr / 'base'}", f"data.pairs={asr / 'pairs' / 'pairs_ref.jsonl'}"]
    recipe_label = "lpo-ste r2={:.1f} (recipe)".format(load_train_recipe(recipe_path, base).loss.r2)
    adapter, models, labels = None, [str(asr / "base"), stage["lpo_model"]], ["base", recipe_label]
    run_dirs = {recipe_label: asr / "lpo"}
    for label, extra in RUNS.items():
        if args.only and label not in args.only:
            continue
        slug = label.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "")
        recipe = load_train_recipe(recipe_path, base + extra + [f"train.out_dir={out / slug}"])
        if adapter is None:
            adapter = load_adapter(recipe.model)
        if not (out / slug / "model" / "model.safetensors").exists():
            train(recipe, resume=(out / slug / "checkpoints").exists(), adapter=adapter)
        run_dirs[label] = out / slug
        models.append(str(out / slug / "model"))
        labels.append(label)
    results = evaluate(models, labels, str(asr / "data" / "test.jsonl"), str(out / "eval"))
    base_wer = results["base"]["wer"]
    for label, m in results.items():
        m["wer_vs_base"] = m["wer"] / base_wer
        m["train_seconds"] = round(read_metrics(run_dirs[label])[-1]["elapsed_s"]) if label in run_dirs else None
    confirm = {}
    if args.confirm:  # the sentence generator is prefix-stable: a longer test split extends the first one
        cdata = out / "confirm" / "data"
        run_command(["make-asr-data", "--out", str(cdata), "--n-train", str(args.n_train),
              "--n-test", str(args.n_test + args.confirm)], done=cdata / "test.jsonl")
        rows = (cdata / "test.jsonl").read_text().splitlines()[args.n_test:]
        (cdata / "confirm.jsonl").write_text("\n".join(rows) + "\n")
        confirm = evaluate(models, labels, str(cdata / "confirm.jsonl"), str(out / "confirm" / "eval"))
        for label, m in confirm.items():
            m["wer_vs_base"] = m["wer"] / confirm["base"]["wer"]
    table = markdown_table(results)
    rows = ["| model | WER / base WER |", "|---|---|"] + [f"| {k} | {v['wer_vs_base']:.3f} |" for k, v in results.items()]
    held_out = (asr / "data" / "test.jsonl").resolve()
    held_out = held_out.relative_to(REPO) if held_out.is_relative_to(REPO) else held_out
    md = (f"# ASR: base vs SFT vs DPO vs LPO (same pairs, same budget)\n\nHeld-out: `{held_out}`; "
          f"recipe: `recipes/asr/whisper-tiny-offline.yaml` with only the loss changed.\n\n{table}\n" + "\n".join(rows) + "\n")
    if confirm:
        md += (f"\n## Confirmation: {args.confirm} fresh held-out utterances (sentences in neither set above)\n\n"
               + markdown_table(confirm) + "\n| model | WER / base WER |\n|---|---|\n"
               + "\n".join(f"| {k} | {v['wer_vs_base']:.3f} |" for k, v in confirm.items()) + "\n")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results + ".json").write_text(json.dumps({"results": results, "confirm": confirm}, indent=2))
    Path(args.results + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
