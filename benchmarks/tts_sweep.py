"""LPO settings for the TTS and emotion tracks, compared on DEV prompts (test prompts stay for tts_compare.py).

    .venv/bin/python benchmarks/tts_compare.py --track tts --eval-limit 100   # first: builds the pairs
    .venv/bin/python benchmarks/tts_sweep.py --track tts       # -> benchmarks/results/tts_sweep.{json,md}
    .venv/bin/python benchmarks/tts_compare.py --track tts-sync --eval-limit 100
    .venv/bin/python benchmarks/tts_sweep.py --track tts-sync  # -> benchmarks/results/tts-sync_sweep.{json,md}
    .venv/bin/python benchmarks/tts_compare.py --track emotion --eval-limit 99
    .venv/bin/python benchmarks/tts_sweep.py --track emotion   # -> benchmarks/results/emotion_sweep.{json,md}
    .venv/bin/python benchmarks/tts_compare.py --track emotion-sync --eval-limit 99 --losses lpo,dpo,sft-cont
    .venv/bin/python benchmarks/tts_sweep.py --track emotion-sync  # -> benchmarks/results/emotion-sync_sweep.{json,md}

Every run trains the track's recipe on tts_compare's pairs (same pairs, same seed) with only the
listed overrides; the recipe's own run is tts_compare's `lpo` model, reused. A setting that changes a
pair rule (`build_pairs.*`) selects its own pairs from tts_compare's scored candidates, without
sampling again (settings with the same pair rules share them; a larger `limit` samples only the new
prompts). `--configs a,b` runs only those settings; `--seeds 0,1,2` trains each of them once per
seed; `--all-styles` scores every dev sentence in every style; `key=value` overrides (the ones given
to tts_compare.py for the pairs in `--compare`) reach every stage. Then one `eval --wer` of
the SFT model and every run side by side on the 100 dev prompts (sentences in neither train nor test;
the emotion track asks for the styles in turn). Each stage is skipped when its output exists.

`--also lpo-soup` scores runs that tts_compare.py trained (here: the average of the recipe's three seeds)
beside them. `--test` scores the settings on tts_compare's held-out test prompts instead, in tts_compare's eval
folder, where the SFT model and the recipe's run (labelled `lpo` there) resume from its scores: for a
setting already compared on dev, so that its test figure sits beside the recipe's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from tts_compare import REPO, eval_command, every_style, run, same_overrides, train_prompts  # noqa: E402  (the same stage runner)
from tts_compare import TRACKS as COMPARE_TRACKS  # noqa: E402  (each track's world)

from lpo_speech.recipe import apply_overrides, read_recipe  # noqa: E402

TRACKS = {  # recipe, dev manifest, style scorer, and label (also the run's folder) -> overrides
    "tts": ("recipes/tts/tiny.yaml", "dev_prompts.jsonl", None, {  # recipe: lpo-ste, r2 0.8, 3 epochs
        "r2-0.3": ["loss.r2=0.3"],
        "epochs-6": ["train.epochs=6"],
        "r2-0.3_epochs-6": ["loss.r2=0.3", "train.epochs=6"],
    }),
    "tts-sync": ("recipes/tts/tiny-sync.yaml", "dev_prompts.jsonl", None, {  # the phoneme-synchronous model
        "lr-1e-4": ["train.lr=1.0e-4", "train.min_lr=1.0e-5"],
        "epochs-1": ["train.epochs=1"],
        # run on the on-policy pairs with --compare runs/tts-sync_best800 and that run's build_pairs
        # overrides: LPO plus the NLL of the chosen (best-of-N fine-tuning's term, as RPO adds to DPO), and
        # best-of-N fine-tuning alone (tts_compare.py's sft-cont, linked in rather than trained again)
        "sft-weight-1.0": ["loss.sft_weight=1.0"],
        "sft-cont": ["loss.type=sft", "loss.sft_weight=1.0", "loss.gamma=0.0"],
    }),
    "emotion": ("recipes/tts/emotion-offline.yaml", "dev_style_prompts.jsonl", "assets/style-classifier.json", {
        "r2-0.8_epochs-3": ["loss.r2=0.8", "train.epochs=3"],  # recipe: r2 0.3, 6 epochs (picked by this sweep)
        "r2-0.3_epochs-3": ["loss.r2=0.3", "train.epochs=3"],
    }),
    "emotion-sync": ("recipes/tts/emotion-offline-sync.yaml", "dev_style_prompts.jsonl", "assets/style-classifier.json", {
        # recipe: r2 0.3, 6 epochs (the plain model's pick), pareto selection of samples at temperature 0.7
        "r2-0.8": ["loss.r2=0.8"],
        "epochs-3": ["train.epochs=3"],
        "lexicographic": ["build_pairs.selection=lexicographic"],  # style first: the rejected may be clearer
        "pairs-4": ["build_pairs.pairs_per_prompt=4"],
        # twice the styled train prompts (tts_compare's 300 candidates reused, 300 more sampled), the
        # same rules; at 6 epochs (twice the steps) and at 3 (the recipe's step budget)
        "prompts-600": ["build_pairs.limit=600"],
        "prompts-600_epochs-3": ["build_pairs.limit=600", "train.epochs=3"],
        # pareto pairs over style OR words (margin_rule any): prompts already in style also give pairs
        # whose rejected says the words worse; at about the recipe's step budget
        "cer-pairs_epochs-3": ["build_pairs.min_margins={emotion: 0.3, cer: 0.1}", "build_pairs.margin_rule=any",
                               "train.epochs=3"],
        "cer-pairs_1-per-prompt": ["build_pairs.min_margins={emotion: 0.3, cer: 0.2}", "build_pairs.margin_rule=any",
                                   "build_pairs.pairs_per_prompt=1"],
        # the recipe trained again with the pairs in other orders (tts_compare.py's lpo-seed1/2 runs)
        "seed-1": ["train.seed=1"],
        "seed-2": ["train.seed=2"],
        # pairs whose rejected lasts at most 1.5x the chosen (or 1/1.5): the recipe's rejected are
        # mostly stalled or slow renditions (median 2.1x the chosen's length on "neutral"), which
        # teaches speed; 1.5 keeps style pairs (low / high lasts about 1.4x). Run with --seeds 0,1,2:
        # one run cannot rank settings on failures (the recipe's seeds give dev failures 0.27-0.38)
        "length-1.5": ["build_pairs.max_length_ratio=1.5"],
        "prompts-600_length-1.5": ["build_pairs.limit=600", "build_pairs.max_length_ratio=1.5"],
        # LPO's offset m = 1/(2 beta) is the margin in nats per token (logps are averaged) that the
        # loss drives chosen and rejected apart to; the recipe's beta 0.2 asks for 2.5, and its
        # rejected fall by 1-3.5 nats per token. A larger beta stops the push at a smaller margin.
        "beta-1.0": ["loss.beta=1.0"],
        # LPO plus the chosen NLL: what met the TTS target on tts-sync's on-policy pairs
        "sft-weight-1.0": ["loss.sft_weight=1.0"],
        # that target's whole formula here: pairs for the words as well as the style, from twice the
        # prompts (prompts-600's candidates), with the chosen NLL; 3 epochs
        "cer-pairs_prompts-600_sft-weight-1.0": ["build_pairs.limit=600", "build_pairs.min_margins={emotion: 0.3, cer: 0.1}",
                                                 "build_pairs.margin_rule=any", "train.epochs=3", "loss.sft_weight=1.0"],
    }),
}


def with_seeds(configs: dict[str, list[str]], seeds: list[int]) -> dict[str, list[str]]:
    """Each setting once per seed: seed 0 under its own label (the recipe's seed), seed n > 0 as
    `<label>_seed-<n>` with `train.seed=n` (the same pairs in another order)."""
    return {(label if n == 0 else f"{label}_seed-{n}"): (extra if n == 0 else [*extra, f"train.seed={n}"])
            for label, extra in configs.items() for n in seeds}


def scoring(track: str, data: Path, out: Path, compare: Path, test: bool) -> tuple[Path, Path, str]:
    """Where the runs are scored: (held-out manifest, eval folder, the recipe's label). On test, in
    tts_compare's eval folder under its label `lpo`, so that the SFT model's and the recipe's scores
    there resume instead of being made again."""
    if test:
        return data / COMPARE_TRACKS[track]["data"], compare / "eval", "lpo"
    return data / TRACKS[track][1], out / "eval", "recipe"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--track", choices=sorted(TRACKS), default="tts")
    ap.add_argument("--compare", default=None, help="tts_compare.py's runs folder (default runs/<track>_compare)")
    ap.add_argument("--data", default=None, help="the world (default: the track's, runs/tts/data or runs/sync/data)")
    ap.add_argument("--out", default=None, help="runs folder (default runs/<track>_sweep)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--results", default=None, help="results prefix (default benchmarks/results/<track>_sweep)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated settings to train (default: all of the track's; '' = none, which "
                         "scores only the SFT model and the recipe's run on the dev prompts)")
    ap.add_argument("--all-styles", action="store_true",
                    help="emotion tracks: score every dev sentence in every style (3x the prompts)")
    ap.add_argument("--test", action="store_true",
                    help="score on tts_compare's test prompts in its eval folder (for settings already run on dev)")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds per setting (default 0; "
                                                 "seed n > 0 runs as <label>_seed-<n>)")
    ap.add_argument("--also", default="", help="comma-separated runs of tts_compare.py (its labels, e.g. "
                                               "lpo-seed1,lpo-soup) to score beside, as trained there")
    ap.add_argument("overrides", nargs="*", help="recipe key=value overrides for every stage (as given to "
                                                 "tts_compare.py for the pairs in --compare)")
    a = ap.parse_args()

    recipe_name, _, scorer, configs = TRACKS[a.track]
    if a.configs is not None:
        wanted = [x for x in a.configs.split(",") if x]
        if unknown := [x for x in wanted if x not in configs]:
            ap.error(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(configs)})")
        configs = {k: configs[k] for k in wanted}
    try:
        seeds = [int(x) for x in a.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds: comma-separated integers, got {a.seeds!r}")
    configs = with_seeds(configs, seeds)
    recipe = REPO / recipe_name
    compare = Path(a.compare or f"runs/{a.track}_compare")
    data = Path(a.data or COMPARE_TRACKS[a.track]["world"])
    out = Path(a.out or f"runs/{a.track}_sweep")
    results_prefix = a.results or str(REPO / "benchmarks" / "results" / f"{a.track}_sweep")
    dist = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.procs), "-m", "lpo_speech.cli"]
    env = {"OMP_NUM_THREADS": "1"}
    pairs = compare / "pairs" / "pairs_ref.jsonl"
    if not pairs.exists():
        print(f"error: {pairs}: missing (run benchmarks/tts_compare.py --track {a.track} first)", file=sys.stderr)
        sys.exit(2)
    same_overrides(out, a.overrides)
    sft = read_recipe(recipe)["model"]["path"]
    held_out, eval_dir, recipe_label = scoring(a.track, data, out, compare, a.test)
    models, labels = [sft, str(compare / "lpo" / "model")], ["sft", recipe_label]
    kept = {recipe_label: json.loads((compare / "pairs" / "summary.json").read_text())["pairs"]}
    for label in (x for x in a.also.split(",") if x):
        if not (compare / label / "model" / "model.safetensors").exists():
            print(f"error: {compare / label / 'model'}: missing (train it with tts_compare.py --losses {label})",
                  file=sys.stderr)
            sys.exit(2)
        models.append(str(compare / label / "model"))
        labels.append(label)
    pair_dirs: dict[tuple, Path] = {}  # settings with the same pair rules share one pair folder (the first's)
    for label, extra in configs.items():
        run_dir = out / label
        run_pairs = pairs
        if rules_changed := tuple(x for x in extra if x.startswith("build_pairs.")):
            # A pair rule changes: select again from tts_compare's scored candidates, copied so that the
            # candidate stage resumes with nothing left to sample (selection rules may change freely;
            # a larger `limit` samples only the new prompts).
            pair_dir = pair_dirs.setdefault(rules_changed, run_dir / "pairs")
            pair_dir.mkdir(parents=True, exist_ok=True)
            for name in ("candidates.jsonl", "candidates.jsonl.settings.json"):
                if not (pair_dir / name).exists():
                    shutil.copy2(compare / "pairs" / name, pair_dir / name)
            run_pairs = pair_dir / "pairs_ref.jsonl"
            prompts = train_prompts(COMPARE_TRACKS[a.track])
            chosen = apply_overrides(read_recipe(recipe), [*a.overrides, *extra])["build_pairs"]["chosen"]
            gold = [f"build_pairs.gold={data / 'train.jsonl'}"] if chosen == "gold" else []
            run([*dist, "build-pairs", str(recipe), f"build_pairs.prompts={data / prompts}", *gold,
                 f"build_pairs.work_dir={pair_dir}", f"data.pairs={run_pairs}", *a.overrides, *extra], done=run_pairs,
                env=env)
            kept[label] = json.loads((pair_dir / "summary.json").read_text())["pairs"]
        resume = ["--resume"] if (run_dir / "checkpoints").exists() else []
        run([*dist, "train", str(recipe), f"data.pairs={run_pairs}", *a.overrides, *extra, f"train.out_dir={run_dir}",
             *resume],
            done=run_dir / "model" / "model.safetensors", env=env)
        models.append(str(run_dir / "model"))
        labels.append(label)
    # No done marker: eval resumes per model and prompt, so a setting added to a finished sweep is scored alone.
    manifest = every_style(held_out) if a.all_styles else held_out
    run(eval_command(dist, manifest, eval_dir, models, labels, scorer), done=None, env=env)
    results = json.loads((eval_dir / "metrics.json").read_text())
    for m in results.values():
        m["wer_vs_sft"] = m["wer"] / max(results["sft"]["wer"], 1e-9)
    md = (f"# {a.track}: LPO settings on the {'test' if a.test else 'dev'} prompts\n\n"
          f"Pairs `{pairs}`; recipe `{recipe_name}` ({' '.join(a.overrides) or 'as committed'}) with the "
          f"label's overrides; held-out "
          f"`{manifest}` (greedy). Pairs per run (a run that changes a pair rule selects its own "
          f"from the same candidates): {', '.join(f'{k} {v}' for k, v in kept.items())}.\n\n"
          + (eval_dir / "table.md").read_text() + "\n"
          "| model | WER / SFT WER |\n|---|---|\n"
          + "\n".join(f"| {k} | {v['wer_vs_sft']:.3f} |" for k, v in results.items()) + "\n")
    Path(results_prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(results_prefix + ".json").write_text(json.dumps(results, indent=2))
    Path(results_prefix + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
