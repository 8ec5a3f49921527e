"""TTS and emotion quality comparison on the offline world: SFT vs LPO vs DPO vs SFT continued on the
chosen side, same pairs, same budget, one command per track.

    .venv/bin/python benchmarks/tts_compare.py --track tts           # recipes/tts/tiny.yaml
    .venv/bin/python benchmarks/tts_compare.py --track emotion       # recipes/tts/emotion-offline.yaml
    .venv/bin/python benchmarks/tts_compare.py --track tts-sync      # recipes/tts/tiny-sync.yaml
    .venv/bin/python benchmarks/tts_compare.py --track emotion-sync  # recipes/tts/emotion-offline-sync.yaml
    -> benchmarks/results/<track>_compare.{json,md}

Each stage is the documented CLI command, printed as it runs and skipped when its output exists (a
rerun resumes; one into the same --out with other overrides is refused): the world (make-tts-data
with the SFT checkpoint's world settings), build-pairs, one `train` per loss with only the loss
changed (lpo-ste, sigmoid; sft on the chosen responses: the honest baseline, since a gain may be
nothing but fine-tuning on gold, or on the model's own best samples when the chosen side is picked
from them, as best-of-N fine-tuning does), then one `eval --wer` of all models side by side on the
held-out prompts. Every stage runs as two single-thread processes under torchrun (`--procs`): DDP
for training, which is faster than one two-thread process on 2 cores and gives the same run
(docs/design.md), shards for sampling and scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path


from lpo_speech.recipe import apply_overrides, read_recipe
from lpo_speech.errors import UserError
from lpo_speech.records import TtsPrompt, load_jsonl, write_jsonl_atomic
from lpo_speech.stages import check_settings

REPO = Path(__file__).resolve().parents[1]
TRACKS = {
    "tts": {"recipe": "recipes/tts/tiny.yaml", "data": "test_prompts.jsonl", "emotion": False, "world": "runs/tts/data"},
    "emotion": {"recipe": "recipes/tts/emotion-offline.yaml", "data": "test_style_prompts.jsonl", "emotion": True,
                "world": "runs/tts/data"},
    "tts-sync": {"recipe": "recipes/tts/tiny-sync.yaml", "data": "test_prompts.jsonl", "emotion": False,
                 "world": "runs/sync/data"},  # the phoneme-synchronous world
    "emotion-sync": {"recipe": "recipes/tts/emotion-offline-sync.yaml", "data": "test_style_prompts.jsonl",
                     "emotion": True, "world": "runs/sync/data"},
}
LOSSES = {  # label -> overrides (on top of the recipe, which trains lpo-ste)
    "lpo": [],
    "dpo": ["loss.type=sigmoid", "loss.gamma=0.0"],
    "dpo-gamma": ["loss.type=sigmoid"],  # DPO with the recipe's chosen-side term: separates loss from gamma
    "sft-cont": ["loss.type=sft", "loss.sft_weight=1.0", "loss.gamma=0.0"],
    "lpo-sft": ["loss.sft_weight=1.0"],  # LPO plus the chosen NLL (as RPO adds to DPO)
    # the recipe again with the pairs in other orders: how much one training run's numbers move
    "lpo-seed1": ["train.seed=1"],
    "lpo-seed2": ["train.seed=2"],
    "lpo-seed3": ["train.seed=3"],
    "lpo-seed4": ["train.seed=4"],
    "lpo-seed5": ["train.seed=5"],
}
# label -> the runs it averages (`lpo-speech merge`; trained first if missing, scored only if listed):
# the model soup of the recipe's three seeds (as WARP merges policies aligned with different seeds)
SOUPS = {"lpo-soup": ["lpo", "lpo-seed1", "lpo-seed2"],
         "lpo-soup2": ["lpo-seed3", "lpo-seed4", "lpo-seed5"],  # a second soup, to see whether the first was luck
         "lpo-soup6": ["lpo", *(f"lpo-seed{s}" for s in range(1, 6))]}  # all six seeds


def run(cmd: list[str], done: Path | None, env: dict | None = None) -> bool:
    """Run one stage unless its `done` marker exists; True when it ran."""
    shown = " ".join(shlex.quote(c) for c in cmd)
    if done is not None and done.exists():
        print(f"== skip (done: {done}) {shown}", flush=True)
        return False
    print(f"== {shown}", flush=True)
    t0 = time.perf_counter()
    code = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}).returncode
    if code:  # the stage printed its own error; stop with its status, without a traceback of ours
        print(f"error: stage failed (exit status {code}): {shown}", file=sys.stderr)
        sys.exit(code)
    print(f"== done in {time.perf_counter() - t0:.0f} s", flush=True)
    return True


def eval_command(dist: list[str], manifest: Path, out: Path, models: list[str], labels: list[str],
                 scorer: str | None) -> list[str]:
    """One side-by-side `eval --wer` of every model on `manifest` (with the style scorer, if any)."""
    # One sampling thread, as the recipes' runtime.sampling_threads: the tiny models sample fastest so.
    ev = [*dist, "eval", "--wer", "--batch-size", "32", "--sampling-threads", "1", "--data", str(manifest),
          "--out", str(out)]
    if scorer:
        ev += ["--emotion-scorer", f"prosody:{scorer}"]
    for m, lab in zip(models, labels):
        ev += ["--model", m, "--label", lab]
    return ev


def train_prompts(track: dict) -> str:
    """The world's manifest that a track samples its pairs from (styled requests for emotion tracks)."""
    return "style_prompts.jsonl" if track["emotion"] else "train_prompts.jsonl"


def same_overrides(out: Path, overrides: list[str]) -> None:
    """Stages are skipped when their output exists, so a runs folder holds one set of overrides, kept
    in `<out>/overrides.json` by the stages' own settings check: a later call with others stops in one
    line (instead of reusing pairs or models made under other settings)."""
    try:
        check_settings(out, {"overrides": list(overrides)}, path=out / "overrides.json")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def first_prompts(manifest: Path, n: int) -> Path:
    """The first `n` prompts of `manifest` (all of them for n = 0), written beside it as
    `<stem>_first<n>.jsonl` so that its relative audio paths hold."""
    if not n:
        return manifest
    rows = manifest.read_text().splitlines()[:n]
    manifest = manifest.with_name(f"{manifest.stem}_first{n}.jsonl")
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def every_style(manifest: Path) -> Path:
    """Each prompt of a styled `manifest` asked for in every style the manifest uses, written beside it
    as `<stem>_all_styles.jsonl`: a sentence keeps its id in its own style (so an eval of `manifest`
    resumes into this one) and gets `<id>-<style>` in the others. Three times the prompts for the same
    held-out sentences: a failure rate on 200 prompts has a standard error near 0.035."""
    try:
        prompts = load_jsonl(manifest, TtsPrompt)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    styles = sorted({p.emotion for p in prompts if p.emotion})
    if not styles:
        print(f"error: {manifest}: no prompt has an 'emotion' (style) to rotate", file=sys.stderr)
        sys.exit(2)
    rows = [q for p in prompts
            for q in [p, *(replace(p, id=f"{p.id}-{s}", emotion=s) for s in styles if s != p.emotion)]]
    out = manifest.with_name(f"{manifest.stem}_all_styles.jsonl")
    write_jsonl_atomic(out, rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--track", choices=sorted(TRACKS), required=True)
    ap.add_argument("--data", default=None, help="the world (made here if missing; default: the track's, "
                                                 "runs/tts/data or runs/sync/data)")
    ap.add_argument("--out", default=None, help="runs folder (default runs/<track>_compare)")
    ap.add_argument("--procs", type=int, default=2, help="DDP processes for build-pairs and training")
    ap.add_argument("--eval-limit", type=int, default=0, help="score only the first N held-out prompts (0 = all)")
    ap.add_argument("--all-styles", action="store_true",
                    help="emotion tracks: score every held-out sentence in every style (3x the prompts)")
    ap.add_argument("--results", default=None, help="results prefix (default benchmarks/results/<track>_compare)")
    ap.add_argument("--losses", default=",".join(LOSSES),
                    help=f"comma-separated runs to train and compare (from {', '.join([*LOSSES, *SOUPS])}; "
                         "a soup trains its members if missing and scores only the average)")
    ap.add_argument("overrides", nargs="*", help="recipe key=value overrides for every stage")
    a = ap.parse_args()

    losses = [x for x in a.losses.split(",") if x]
    if unknown := [x for x in losses if x not in LOSSES and x not in SOUPS]:
        ap.error(f"--losses: unknown {', '.join(unknown)} (known: {', '.join([*LOSSES, *SOUPS])})")
    py = sys.executable
    track = TRACKS[a.track]
    recipe_path = REPO / track["recipe"]
    recipe = apply_overrides(read_recipe(recipe_path), a.overrides)  # as the stages will see it
    out = Path(a.out or f"runs/{a.track}_compare")
    data = Path(a.data or track["world"])
    same_overrides(out, a.overrides)
    sft = Path(recipe["model"]["path"])
    world = json.loads((REPO / sft / "world.json").read_text())
    run([py, "-m", "lpo_speech.cli", "make-tts-data", "--out", str(data), "--n-train", str(world["n_train"]),
         "--n-dev", str(world["n_dev"]), "--n-test", str(world["n_test"]), "--seed", str(world["seed"]),
         "--style-share", str(world["style_share"]), *(["--phoneme-sync"] if world.get("phoneme_sync") else [])],
        done=data / "test_style_prompts.jsonl")
    dist = [py, "-m", "torch.distributed.run", "--nproc_per_node", str(a.procs), "-m", "lpo_speech.cli"]
    env = {"OMP_NUM_THREADS": "1"}
    prompts = train_prompts(track)
    paths = [f"build_pairs.prompts={data / prompts}", f"build_pairs.work_dir={out / 'pairs'}",
             f"data.pairs={out / 'pairs' / 'pairs_ref.jsonl'}", *a.overrides]
    chosen = recipe["build_pairs"].get("chosen")
    gold = chosen in ("gold", "rendered")  # the chosen side is ground truth (or rendered like it)
    if chosen == "gold":
        paths.append(f"build_pairs.gold={data / 'train.jsonl'}")
    run([*dist, "build-pairs", str(recipe_path), *paths], done=out / "pairs" / "pairs_ref.jsonl", env=env)
    models, labels, seconds = [str(sft)], ["sft"], {}
    trained = list(dict.fromkeys(x for label in losses for x in SOUPS.get(label, [label])))  # in order, once
    for label in trained:
        run_dir = out / label
        resume = ["--resume"] if (run_dir / "checkpoints").exists() else []
        t0 = time.perf_counter()
        if run([*dist, "train", str(recipe_path), *paths, *LOSSES[label], f"train.out_dir={run_dir}", *resume],
               done=run_dir / "model" / "model.safetensors", env=env):
            seconds[label] = round(time.perf_counter() - t0)  # None in the results: trained by an earlier call
    for label in losses:
        if label in SOUPS:
            run([py, "-m", "lpo_speech.cli", "merge", *(x for m in SOUPS[label] for x in ("--model", str(out / m / "model"))),
                 "--out", str(out / label / "model")], done=out / label / "model" / "model.safetensors")
        models.append(str(out / label / "model"))
        labels.append(label)
    manifest = first_prompts(data / track["data"], a.eval_limit)
    if a.all_styles:
        manifest = every_style(manifest)
    scorer = recipe["build_pairs"]["emotion"]["path"] if track["emotion"] else None
    # No done marker: eval resumes per model and prompt, so a model added to a finished run is scored alone.
    run(eval_command(dist, manifest, out / "eval", models, labels, scorer), done=None, env=env)
    results = json.loads((out / "eval" / "metrics.json").read_text())
    pairs = json.loads((out / "pairs" / "summary.json").read_text())
    base = results["sft"]
    for label, m in results.items():
        m["wer_vs_sft"] = m["wer"] / max(base["wer"], 1e-9)
        m["train_seconds"] = seconds.get(label)
    table = (out / "eval" / "table.md").read_text()
    ratio = ["| model | WER / SFT WER |" + (" emotion_acc - SFT's |" if track["emotion"] else ""),
             "|---|---|" + ("---|" if track["emotion"] else "")]
    for label, m in results.items():
        row = f"| {label} | {m['wer_vs_sft']:.3f} |"
        if track["emotion"]:
            row += f" {100 * (m['emotion_acc'] - base['emotion_acc']):+.1f} points |"
        ratio.append(row)
    rules = ", ".join(f"{k} {v}" for k, v in pairs.items() if isinstance(v, int))
    cont = " vs SFT continued on the chosen side" + (" (gold)" if gold else " (the model's best samples)")
    md = (f"# {a.track}: SFT vs LPO vs DPO" + (cont if "sft-cont" in labels else "") + "\n\n"
          f"Recipe `{track['recipe']}` ({' '.join(a.overrides) or 'as committed'}); held-out `{manifest}`.\n"
          f"Pairs: {rules}.\n\n{table}\n" + "\n".join(ratio) + "\n")
    prefix = Path(a.results or REPO / "benchmarks" / "results" / f"{a.track}_compare")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.json").write_text(json.dumps({"results": results, "pairs": pairs, "overrides": a.overrides}, indent=2))
    Path(f"{prefix}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
