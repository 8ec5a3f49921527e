"""Iterated on-policy rounds (sample -> pair -> train, repeated from the trained model) on the offline
TTS world, LPO against its honest baseline, best-of-N SFT iterated the same way (as RAFT / ReST).

    .venv/bin/python benchmarks/tts_rounds.py --track tts-sync --rounds 3 --eval-limit 100
    -> benchmarks/results/<track>_rounds.{json,md}

Round r samples the next `--prompts-per-round` train prompts (round 1: prompts 0-199, round 2:
200-399, ...), so no prompt is seen twice. Each arm samples its own candidates from its own model of
the previous round (round 1: the recipe's SFT model, one candidate set shared by both arms), picks the
best candidate as the chosen side (`build_pairs.chosen=best`, cooler samples: temperature 0.7; more
`key=value` overrides go to every stage), and trains one recipe budget from that model: `lpo` with the
recipe's loss, `sft-cont` with the NLL of the chosen side only. DPO is left out: on the same round-1
pairs it collapses (benchmarks/results/tts-sync_best.md). Finally one `eval --wer` of the SFT model and
every arm after every round on the held-out prompts. Each stage is tts_compare.py's documented CLI
command, skipped when its output exists (a rerun resumes, and `--rounds` can grow later).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from tts_compare import (  # noqa: E402  (the same stages, eval and manifests)
    LOSSES, REPO, TRACKS, eval_command, first_prompts, run, same_overrides, train_prompts)

from lpo_speech.recipe import apply_overrides, read_recipe  # noqa: E402

ON_POLICY = ["build_pairs.chosen=best", "build_pairs.temperature=0.7"]  # as tts-sync_best.md
ARMS = ("lpo", "sft-cont")


def prompt_slice(manifest: Path, start: int, n: int) -> Path:
    """Write prompts [start, start+n) beside `manifest` (its relative audio paths hold there)."""
    rows = manifest.read_text(encoding="utf-8").splitlines()[start:start + n]
    if len(rows) < n:
        print(f"error: {manifest}: {len(rows) + start} prompts, this round needs {start + n}", file=sys.stderr)
        sys.exit(2)
    dst = manifest.with_name(f"{manifest.stem}_{start}-{start + n}.jsonl")
    if not dst.exists():
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
        tmp.replace(dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--track", choices=sorted(TRACKS), default="tts-sync")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts-per-round", type=int, default=200)
    ap.add_argument("--data", default=None, help="the world (default: the track's; build it with tts_compare.py)")
    ap.add_argument("--out", default=None, help="runs folder (default runs/<track>_rounds)")
    ap.add_argument("--procs", type=int, default=2, help="DDP processes for build-pairs and training")
    ap.add_argument("--eval-limit", type=int, default=0, help="score only the first N held-out prompts (0 = all)")
    ap.add_argument("--results", default=None, help="results prefix (default benchmarks/results/<track>_rounds)")
    ap.add_argument("overrides", nargs="*", help="recipe key=value overrides for every stage")
    a = ap.parse_args()
    if a.rounds < 1 or a.prompts_per_round < 1:
        ap.error("--rounds and --prompts-per-round must be at least 1")

    track = TRACKS[a.track]
    recipe_path = REPO / track["recipe"]
    overrides = [*ON_POLICY, *a.overrides]
    recipe = apply_overrides(read_recipe(recipe_path), overrides)  # as the stages see it
    out = Path(a.out or f"runs/{a.track}_rounds")
    data = Path(a.data or track["world"])
    prompts = data / train_prompts(track)
    if not prompts.exists():
        print(f"error: {prompts}: missing (build the world with benchmarks/tts_compare.py --track {a.track})",
              file=sys.stderr)
        sys.exit(2)
    same_overrides(out, a.overrides)
    dist = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.procs), "-m", "lpo_speech.cli"]
    env = {"OMP_NUM_THREADS": "1"}
    sft = str(recipe["model"]["path"])
    current = {arm: sft for arm in ARMS}  # each arm's model after the latest round
    models, labels, summaries = [sft], ["sft"], {}
    for r in range(1, a.rounds + 1):
        slice_ = prompt_slice(prompts, (r - 1) * a.prompts_per_round, a.prompts_per_round)
        for arm in ARMS:
            # Round 1 samples the one SFT model once for both arms; later rounds sample each arm's own model.
            pair_dir = out / f"round{r}" / ("pairs" if r == 1 else f"{arm}-pairs")
            stage = [f"model.path={current[arm]}", f"build_pairs.prompts={slice_}",
                     f"build_pairs.limit={a.prompts_per_round}", f"build_pairs.work_dir={pair_dir}",
                     f"data.pairs={pair_dir / 'pairs_ref.jsonl'}", *overrides]
            run([*dist, "build-pairs", str(recipe_path), *stage], done=pair_dir / "pairs_ref.jsonl", env=env)
            summaries[f"{arm}-r{r}"] = json.loads((pair_dir / "summary.json").read_text())
            run_dir = out / f"round{r}" / arm
            resume = ["--resume"] if (run_dir / "checkpoints").exists() else []
            run([*dist, "train", str(recipe_path), *stage, *LOSSES[arm], f"train.out_dir={run_dir}", *resume],
                done=run_dir / "model" / "model.safetensors", env=env)
            current[arm] = str(run_dir / "model")
            models.append(current[arm])
            labels.append(f"{arm}-r{r}")

    manifest = first_prompts(data / track["data"], a.eval_limit)
    scorer = recipe["build_pairs"]["emotion"]["path"] if track["emotion"] else None
    run(eval_command(dist, manifest, out / "eval", models, labels, scorer), done=None, env=env)  # resumes per model
    results = json.loads((out / "eval" / "metrics.json").read_text())
    base = results["sft"]
    for m in results.values():
        m["wer_vs_sft"] = m["wer"] / max(base["wer"], 1e-9)
    kept = "\n".join(f"| {k} | {s['prompts']} | {s['candidates']} | {s['prompts_without_pair']} | {s['pairs']} |"
                     for k, s in summaries.items())
    md = (f"# {a.track}: iterated on-policy rounds, LPO vs best-of-N SFT\n\n"
          f"Recipe `{track['recipe']}` ({' '.join(overrides)}); {a.prompts_per_round} new train prompts per round; "
          f"held-out `{manifest}` (greedy).\n\n"
          "| round's pairs | prompts | candidates | prompts without a pair | pairs |\n|---|---|---|---|---|\n"
          f"{kept}\n\n{(out / 'eval' / 'table.md').read_text()}\n"
          "| model | WER / SFT WER |\n|---|---|\n"
          + "\n".join(f"| {k} | {v['wer_vs_sft']:.3f} |" for k, v in results.items()) + "\n")
    prefix = Path(a.results or REPO / "benchmarks" / "results" / f"{a.track}_rounds")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.json").write_text(json.dumps({"results": results, "pairs": summaries, "overrides": overrides},
                                                 indent=2))
    Path(f"{prefix}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
