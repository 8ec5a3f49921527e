"""`lpo-speech study STUDY.yaml`: a comparison written as data, run by one command.

A study file names the steps that make its data and starting models (any lpo-speech command lines),
one base training recipe with named variants (overrides) and seeds, and the eval sets every model is
scored on. The runner expands `{work}` (the study's work folder), `{variant}` and `{seed}`, runs each
command through `lpo_speech.steps` (skipped once its `done` file exists, training resumed from its
checkpoints: an interrupted study continues where it stopped), evaluates every model on every set,
and writes `results/<name>/`:

  results.json   one schema: study, commit (and whether the tree had uncommitted changes), date,
                 machine, every command (ran or skipped as done, seconds), one row per model, seed and
                 set with its metrics, and the per-model summary (mean, sample sd, seeds)
  README.md      the page for readers: what was compared, the table (mean ± sd over seeds; the change
                 against the baseline row for each set, so a gain in domain bought by forgetting out of
                 domain shows at a glance), the commands, the machine
  <metric>.png   the headline metric per set and model, with the spread over seeds

Example (studies/asr-audio-llm.yaml is a full one):

  name: my-study
  title: "LPO vs DPO"
  steps:
    - run: make-asr-data --out {work}/data --n-train 200 --n-test 50
      done: "{work}/data/test.jsonl"
  runs:
    recipe: recipes/asr/whisper-tiny-offline.yaml
    overrides: [model.path={work}/base]
    variants: {lpo: [], dpo: [loss.type=sigmoid]}
    seeds: [0, 1]
  eval:
    sets: {in-domain: "{work}/data/test.jsonl"}
    models: {base: "{work}/base"}
    baseline: base
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lpo_speech.recipe import build_recipe, read_recipe
from lpo_speech.steps import StepLog, run_command, shown, train_command

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    run: str                      # an lpo-speech command line (the leading `lpo-speech` is optional)
    done: str                     # a file that exists once the step has finished


@dataclass
class Runs:
    recipe: str                   # the base training recipe
    variants: dict[str, list[str]]  # row name -> overrides on top of `overrides`
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    out: str = "{work}/runs/{variant}/seed{seed}"   # each run's train.out_dir

    def validate(self) -> None:
        if not self.variants:
            raise ValueError("runs.variants: name at least one variant (an empty list of overrides is the recipe)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"runs.seeds: expected distinct seeds, got {self.seeds}")


@dataclass
class Eval:
    sets: dict[str, str]          # set name -> manifest (ASR) or prompt manifest (TTS)
    models: dict[str, str] = field(default_factory=dict)  # rows that are fixed models (the base, the SFT)
    args: list[str] = field(default_factory=list)       # extra `lpo-speech eval` arguments
    metrics: list[str] = field(default_factory=lambda: ["wer"])  # columns; the first is the headline
    baseline: str | None = None   # the row the change columns compare with

    def validate(self) -> None:
        if not self.sets:
            raise ValueError("eval.sets: name at least one eval set")
        if not self.metrics:
            raise ValueError("eval.metrics: name at least one metric")


@dataclass
class Study:
    name: str
    title: str
    eval: Eval
    about: str = ""
    steps: list[Step] = field(default_factory=list)
    runs: Runs | None = None
    work_dir: str = "runs/studies/{name}"
    results_dir: str = "results/{name}"

    def validate(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(f"name: letters, digits, '-', '_' or '.' only, got {self.name!r}")
        rows = list(self.eval.models) + list(self.runs.variants if self.runs else [])
        if len(set(rows)) != len(rows):
            raise ValueError("eval.models and runs.variants share a name: every row needs its own")
        if self.eval.baseline is not None and self.eval.baseline not in rows:
            raise ValueError(f"eval.baseline: {self.eval.baseline!r} is not a row (rows: {', '.join(rows)})")


def load_study(path: str | Path) -> Study:
    return build_recipe(Study, read_recipe(path), path)


def expand(text: str, **values: object) -> str:
    """Replace `{key}` for the given keys only (other braces, e.g. YAML flow mappings, stay)."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def command_args(line: str) -> list[str]:
    args = shlex.split(line)
    return args[1:] if args and args[0] == "lpo-speech" else args


@dataclass
class Model:
    row: str                      # table row: a fixed model's name or a variant
    path: Path
    seed: int | None = None


def plan(study: Study) -> tuple[Path, list[Model]]:
    """The work folder and every model the study evaluates, in table order."""
    work = Path(expand(study.work_dir, name=study.name))
    models = [Model(row, Path(expand(p, work=work))) for row, p in study.eval.models.items()]
    if study.runs:
        for variant in study.runs.variants:
            for seed in study.runs.seeds:
                out = Path(expand(study.runs.out, work=work, variant=variant, seed=seed))
                models.append(Model(variant, out / "model", seed))
    return work, models


def _train_overrides(study: Study, work: Path, variant: str, seed: int) -> tuple[list[str], Path]:
    runs = study.runs
    out = Path(expand(runs.out, work=work, variant=variant, seed=seed))
    items = [*runs.overrides, *runs.variants[variant]]
    return [expand(o, work=work, variant=variant, seed=seed) for o in items] + [
        f"train.seed={seed}", f"train.out_dir={out}"], out


def _eval_dir(work: Path, set_name: str, m: Model) -> Path:
    return work / "eval" / set_name / (m.row if m.seed is None else f"{m.row}-seed{m.seed}")


def run_study(path: str | Path, *, dry_run: bool = False) -> dict | None:
    study = load_study(path)
    work, models = plan(study)
    commands: list[tuple[str, list[str], Path]] = []  # (kind, args, done / run dir)
    for step in study.steps:
        commands.append(("step", command_args(expand(step.run, work=work)), Path(expand(step.done, work=work))))
    if study.runs:
        for variant in study.runs.variants:
            for seed in study.runs.seeds:
                overrides, out = _train_overrides(study, work, variant, seed)
                commands.append(("train", ["train", study.runs.recipe, *overrides], out))
    for set_name, manifest in study.eval.sets.items():
        data = expand(manifest, work=work)
        for m in models:
            out = _eval_dir(work, set_name, m)
            commands.append(("eval", ["eval", "--wer", "--model", str(m.path), "--label", m.row, "--data", data,
                                      "--out", str(out), *study.eval.args], out / "metrics.json"))
    from lpo_speech.recipe import load_train_recipe

    for kind, args, _ in commands:  # a typo in a variant stops now, not after hours of earlier steps
        if kind == "train":
            load_train_recipe(args[1], args[2:])
    if dry_run:
        for _, args, _ in commands:
            print(shown(args))
        return None
    log = StepLog(total=len(commands))
    t0 = time.perf_counter()
    for kind, args, where in commands:
        if kind == "train":
            train_command(args[1], args[2:], where, log=log)
        elif kind == "step" and args[:1] == ["train"]:
            out = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("train.out_dir=")), None)
            if out is not None and (out / "checkpoints").exists() and not where.exists():
                args = [*args, "--resume"]
            run_command(args, done=where, log=log)
        else:
            run_command(args, done=where, log=log)
    rows = []
    for set_name in study.eval.sets:
        for m in models:
            metrics = json.loads((_eval_dir(work, set_name, m) / "metrics.json").read_text())
            rows.append({"row": m.row, "seed": m.seed, "set": set_name, "model": str(m.path), "metrics": metrics})
    results = {"study": study.name, "title": study.title, "study_file": str(path), **provenance(),
               "seconds": round(time.perf_counter() - t0), "commands": log.entries, "rows": rows,
               "summary": summarize(rows, study.eval.metrics)}
    out_dir = Path(expand(study.results_dir, name=study.name))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plots = plot(results, study, out_dir)
    (out_dir / "README.md").write_text(report(results, study, plots))
    print(f"\nresults: {out_dir / 'README.md'}, {out_dir / 'results.json'}")
    return results


def provenance() -> dict:
    """Commit, date and machine, so a results file says what produced it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted_changes": bool(git("status", "--porcelain")),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
                        "python": platform.python_version()}}


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(rows: list[dict], metrics: list[str]) -> list[dict]:
    """Per row, set and metric: mean, sample sd (None for one run) and the number of runs."""
    out: list[dict] = []
    keys = list(dict.fromkeys((r["row"], r["set"]) for r in rows))
    for row, set_name in keys:
        found = [r["metrics"] for r in rows if r["row"] == row and r["set"] == set_name]
        for metric in metrics:
            values = [float(m[metric]) for m in found if isinstance(m.get(metric), (int, float))]
            if not values:
                continue
            mean, sd = _mean_sd(values)
            out.append({"row": row, "set": set_name, "metric": metric, "mean": mean, "sd": sd, "n": len(values)})
    return out


def _cell(s: dict | None) -> str:
    if s is None:
        return "n/a"
    return f"{s['mean']:.4f}" if s["sd"] is None else f"{s['mean']:.4f} ± {s['sd']:.4f}"


def report(results: dict, study: Study, plots: list[str]) -> str:
    summary = {(s["row"], s["set"], s["metric"]): s for s in results["summary"]}
    rows = list(dict.fromkeys(s["row"] for s in results["summary"]))
    sets, metrics, base = list(study.eval.sets), study.eval.metrics, study.eval.baseline
    head = ["row", "runs"]
    for set_name in sets:
        head += [f"{set_name} {m}" for m in metrics] + ([f"{set_name} {metrics[0]} vs {base}"] if base else [])
    lines = [f"# {study.title}", "", study.about.strip(), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        n = max(s["n"] for s in results["summary"] if s["row"] == row)
        cells = [row, str(n)]
        for set_name in sets:
            cells += [_cell(summary.get((row, set_name, m))) for m in metrics]
            if base:
                a, b = summary.get((row, set_name, metrics[0])), summary.get((base, set_name, metrics[0]))
                cells.append(f"x{a['mean'] / b['mean']:.3f}" if a and b and b["mean"] > 0 else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± sample standard deviation over the runs (seeds) of each row; lower is better for error "
              "rates. The `vs` columns divide a row's mean by the baseline row's on the same set.", ""]
    lines += [f"![{p}]({p})" for p in plots] + [""]
    m = results["machine"]
    ran = [c for c in results["commands"] if c["ran"]]
    lines += ["## How it was made", "",
              f"    lpo-speech study {results['study_file']}", "",
              f"Commit `{results['commit']}`" + (" with uncommitted changes" if results["uncommitted_changes"] else "")
              + f"; {results['date']}; {m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if m["gpu"] else ", no GPU")
              + f"; torch {m['torch']}. {len(ran)} of {len(results['commands'])} commands ran in this invocation "
              f"({results['seconds']} s); the others were done before (see results.json).", "",
              "Commands, in order:", ""]
    lines += [f"    {c['command']}" for c in results["commands"]]
    return "\n".join(lines) + "\n"


def plot(results: dict, study: Study, out_dir: Path) -> list[str]:
    """One bar chart of the headline metric: a group per eval set, a bar per row, seed spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = study.eval.metrics[0]
    summary = [s for s in results["summary"] if s["metric"] == metric]
    rows = list(dict.fromkeys(s["row"] for s in summary))
    sets = list(study.eval.sets)
    if not summary:
        return []
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(sets) * max(1, len(rows)) / 2, 3.6))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        got = {s["set"]: s for s in summary if s["row"] == row}
        xs = [j + i * width for j, set_name in enumerate(sets) if set_name in got]
        ys = [got[s]["mean"] for s in sets if s in got]
        err = [got[s]["sd"] or 0.0 for s in sets if s in got]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=row)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(sets))], sets)
    ax.set_ylabel(metric)
    ax.set_title(study.name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"{metric}.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]
