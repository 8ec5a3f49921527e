"""LPO settings for the TTS track, compared on the DEV prompts (the test prompts stay for tts_compare.py).

    .venv/bin/python benchmarks/tts_compare.py --track tts --eval-limit 100   # first: builds the pairs
    .venv/bin/python benchmarks/tts_sweep.py                                  # -> benchmarks/results/tts_sweep.{json,md}

Every run trains `recipes/tts/tiny.yaml` on tts_compare's pairs (same pairs, same seed) with only the
listed overrides; the recipe's own run is tts_compare's `lpo` model, reused. Then one `eval --wer` of
the SFT model and every run side by side on the 100 dev prompts (sentences in neither train nor test).
Each stage is skipped when its output exists, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tts_compare import REPO, run  # noqa: E402  (the same printed, skip-when-done stage runner)

CONFIGS = {  # label (also the run's folder) -> overrides on top of recipes/tts/tiny.yaml (lpo-ste, r2 0.8, 3 epochs)
    "r2-0.3": ["loss.r2=0.3"],
    "epochs-6": ["train.epochs=6"],
    "r2-0.3_epochs-6": ["loss.r2=0.3", "train.epochs=6"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", default="runs/tts_compare", help="tts_compare.py's runs folder (pairs, lpo)")
    ap.add_argument("--data", default="runs/tts/data", help="the world")
    ap.add_argument("--out", default="runs/tts_sweep")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "tts_sweep"))
    a = ap.parse_args()

    recipe = REPO / "recipes" / "tts" / "tiny.yaml"
    compare, data, out = Path(a.compare), Path(a.data), Path(a.out)
    dist = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.procs), "-m", "lpo_speech.cli"]
    env = {"OMP_NUM_THREADS": "1"}
    pairs = compare / "pairs" / "pairs_ref.jsonl"
    if not pairs.exists():
        sys.exit(f"error: {pairs}: missing (run benchmarks/tts_compare.py --track tts first)")
    sft = "assets/tts-tiny-sft"
    models, labels = [sft, str(compare / "lpo" / "model")], ["sft", "recipe"]
    for label, extra in CONFIGS.items():
        run_dir = out / label
        resume = ["--resume"] if (run_dir / "checkpoints").exists() else []
        run([*dist, "train", str(recipe), f"data.pairs={pairs}", *extra, f"train.out_dir={run_dir}", *resume],
            done=run_dir / "model" / "model.safetensors", env=env)
        models.append(str(run_dir / "model"))
        labels.append(label)
    ev = [*dist, "eval", "--wer", "--batch-size", "32", "--data", str(data / "dev_prompts.jsonl"),
          "--out", str(out / "eval")]
    for m, lab in zip(models, labels):
        ev += ["--model", m, "--label", lab]
    run(ev, done=out / "eval" / "table.md", env=env)
    results = json.loads((out / "eval" / "metrics.json").read_text())
    for m in results.values():
        m["wer_vs_sft"] = m["wer"] / max(results["sft"]["wer"], 1e-9)
    md = ("# TTS: LPO settings on the dev prompts\n\n"
          f"Pairs `{pairs}`; recipe `recipes/tts/tiny.yaml` with the label's overrides; held-out "
          f"`{data / 'dev_prompts.jsonl'}` (greedy).\n\n" + (out / "eval" / "table.md").read_text() + "\n"
          "| model | WER / SFT WER |\n|---|---|\n"
          + "\n".join(f"| {k} | {v['wer_vs_sft']:.3f} |" for k, v in results.items()) + "\n")
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results + ".json").write_text(json.dumps(results, indent=2))
    Path(a.results + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
