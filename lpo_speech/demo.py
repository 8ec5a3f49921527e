"""`lpo-speech demo`: the offline end-to-end job that `make demo` runs.

It is nothing but the documented commands, run in order and printed as they run, so every number it
reports can be reproduced by hand. Stages whose output exists are skipped: a rerun after an
interruption resumes. Everything lands under `--out` (default runs/demo); `summary.json` names the
models and the before/after numbers, `summary.md` shows them as a table.

ASR track: synthetic speech (espeak-ng voices, perturbed piper) -> Whisper tiny.en imported from the
CTranslate2 copy shipped in a pip package -> WER of the base model -> perturbation-based pairs with
reference log-probs -> LPO training -> WER of the LPO model.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from lpo_speech.errors import UserError

ASR_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "asr" / "whisper-tiny-offline.yaml"


def _run(args: list[str], done: Path | None = None) -> None:
    from lpo_speech.cli import main

    shown = "lpo-speech " + " ".join(shlex.quote(a) for a in args)
    if done is not None and done.exists():
        print(f"\n== skip (done: {done}) {shown}", flush=True)
        return
    print(f"\n== {shown}", flush=True)
    t0 = time.perf_counter()
    rc = main(args)
    if rc != 0:
        raise UserError(f"demo stage failed (exit {rc}): {shown}")
    print(f"== done in {time.perf_counter() - t0:.0f} s", flush=True)


def asr_stage(out: Path, *, n_train: int, n_test: int, recipe: Path = ASR_RECIPE) -> dict:
    asr = out / "asr"
    paths = [f"model.path={asr / 'base'}", f"build_pairs.manifest={asr / 'data' / 'train.jsonl'}",
             f"build_pairs.work_dir={asr / 'pairs'}", f"data.pairs={asr / 'pairs' / 'pairs_ref.jsonl'}",
             f"train.out_dir={asr / 'lpo'}"]
    _run(["make-asr-data", "--out", str(asr / "data"), "--n-train", str(n_train), "--n-test", str(n_test)],
         done=asr / "data" / "test.jsonl")
    _run(["import-whisper-ct2", "bundled", str(asr / "base")], done=asr / "base" / "model.safetensors")
    _run(["build-pairs", str(recipe), *paths], done=asr / "pairs" / "pairs_ref.jsonl")
    _run(["train", str(recipe), *paths, *(["--resume"] if (asr / "lpo" / "checkpoints").exists() else [])],
         done=asr / "lpo" / "model" / "model.safetensors")
    _run(["eval", "--wer", "--model", str(asr / "base"), "--model", str(asr / "lpo" / "model"), "--label", "base",
          "--label", "lpo", "--data", str(asr / "data" / "test.jsonl"), "--out", str(asr / "eval")],
         done=asr / "eval" / "table.md")
    metrics = json.loads((asr / "eval" / "metrics.json").read_text())
    pairs = json.loads((asr / "pairs" / "summary.json").read_text())
    return {"base_model": str(asr / "base"), "lpo_model": str(asr / "lpo" / "model"),
            "test_set": str(asr / "data" / "test.jsonl"), "pairs": pairs["pairs_written"],
            "wer_before": metrics["base"]["wer"], "wer_after": metrics["lpo"]["wer"],
            "wer_ratio": metrics["lpo"]["wer"] / max(metrics["base"]["wer"], 1e-9),
            "table": (asr / "eval" / "table.md").read_text(), "curves": str(asr / "lpo" / "training_curves.png")}


def run_demo(out: str | Path, *, n_train: int = 200, n_test: int = 60) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = {"asr": asr_stage(out, n_train=n_train, n_test=n_test)}
    summary["seconds"] = round(time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    a = summary["asr"]
    md = ["# lpo-speech demo", "", "## ASR: Whisper tiny.en, LPO on perturbation-based pairs", "",
          f"Held-out set: `{a['test_set']}`; {a['pairs']} training pairs; curves: `{a['curves']}`.", "",
          a["table"], f"WER {a['wer_before']:.4f} -> {a['wer_after']:.4f} (x{a['wer_ratio']:.3f})", ""]
    (out / "summary.md").write_text("\n".join(md))
    print("\n" + "\n".join(md))
    print(f"summary: {out / 'summary.json'} ({summary['seconds']} s)")
    return summary
