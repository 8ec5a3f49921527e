"""`lpo-speech study STUDY.yaml`: a comparison written as data, run by one command.

A study file names the steps that make its data and starting models (any lpo-speech command lines),
one base training recipe with named variants (overrides) and seeds, and the eval sets every model is
scored on. The runner expands `{work}` (the study's work folder), `{variant}` and `{seed}`, runs each
command through `lpo_speech.steps` (skipped once its `done` file exists, training resumed from its
checkpoints: an interrupted study continues where it stopped), evaluates every model on every set,
and writes `results/<name>/`:

  results.json   one schema: study, commit (and whether the tree had uncommitted changes), date,
                 machine, every command (`ran`: by this or a recorded earlier invocation, whose commit
                 and date it keeps; `ran_now`: by this one; seconds), one row per model, seed and
                 set with its metrics, and the per-model summary (mean, sample sd, seeds)
  README.md      the page for readers: what was compared (`about`), the table (mean ± sd over seeds; the change
                 against the baseline row for each set, so a gain in domain bought by forgetting out of
                 domain shows at a glance), what it shows (`findings`, written after a run: rerunning
                 the study with everything done only rewrites the page), the commands, the machine
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

Three more keys, for comparisons that need them:

  subsets:         manifests derived from another, written beside it (its relative audio paths hold)
                   when a command first names them, as `{subset:NAME}`: `skip` the first rows, keep the
                   `first` N, ask for every prompt in `all_styles` the manifest uses (3x the prompts)
  runs.variant_seeds  a variant's own seeds instead of `runs.seeds` (three LPO seeds beside one DPO run)
  runs.candidates  a variant that overrides `build_pairs.*` trains on pairs of its own, built before its
                   first run in `{work}/variant-pairs/<variant>` (variants with the same pair overrides
                   share them); with `candidates` (a build-pairs work folder a step made), its scored
                   candidates are copied in first, so a variant that changes only how pairs are
                   selected (or raises `build_pairs.limit`) samples nothing again

On TTS eval sets (utterances with a `failure` flag) each row is also compared with the baseline prompt
by prompt: failures, the prompts it fails that the baseline does not and the reverse, and the exact
two-sided sign (McNemar) test on those two counts; with a style scorer, failures and speaking rate per
requested style.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lpo_speech.errors import UserError
from lpo_speech.records import write_jsonl_atomic
from lpo_speech.recipe import build_recipe, read_recipe
from lpo_speech.study_report import merge_history, paired_failures, plot, provenance, report, summarize
from lpo_speech.steps import StepLog, run_command, shown, train_command

REPO = Path(__file__).resolve().parents[1]
CANDIDATE_FILES = ("candidates.jsonl", "candidates.jsonl.settings.json")  # what a build-pairs resumes from


@dataclass
class Step:
    run: str                      # an lpo-speech command line (the leading `lpo-speech` is optional)
    done: str                     # a file that exists once the step has finished


@dataclass
class Subset:
    """A manifest derived from another: rows [skip:], the first N of them, optionally every style."""

    data: str                     # the source manifest (JSONL)
    skip: int = 0                 # drop its first rows (e.g. those a longer test split shares with a shorter one)
    first: int = 0                # then keep the first N (0 = all)
    all_styles: bool = False      # then each prompt also in every other style the source uses, as `<id>-<style>`

    def validate(self) -> None:
        if self.skip < 0 or self.first < 0:
            raise ValueError("subsets: skip and first must be >= 0")
        if not (self.skip or self.first or self.all_styles):
            raise ValueError("subsets: set skip, first or all_styles (otherwise name the manifest itself)")

    def path(self, source: Path) -> Path:
        """Beside the source, named by what it keeps: `test_prompts_first100.jsonl`."""
        tags = [f"from{self.skip}"] * bool(self.skip) + [f"first{self.first}"] * bool(self.first)
        return source.with_name("_".join([source.stem, *tags, *["all_styles"] * self.all_styles]) + ".jsonl")

    def write(self, source: Path, out: Path) -> None:
        if not source.is_file():
            raise UserError(f"{source}: no such manifest (a subset's source)")
        rows = []
        for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rows += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as e:
                raise UserError(f"not JSON ({e.msg})", where=f"{source}:{n}") from None
        styles = sorted({r["emotion"] for r in rows if r.get("emotion")})  # every style the source uses
        rows = rows[self.skip:][:self.first or None]
        if self.all_styles:
            if not styles:
                raise UserError("no prompt has an 'emotion' (style) to ask for in every style", where=str(source))
            rows = [q for r in rows for q in [r, *({**r, "id": f"{r['id']}-{s}", "emotion": s}
                                                  for s in styles if s != r.get("emotion"))]]
        write_jsonl_atomic(out, rows)


@dataclass
class Runs:
    recipe: str                   # the base training recipe
    variants: dict[str, list[str]]  # row name -> overrides on top of `overrides`
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    variant_seeds: dict[str, list[int]] = field(default_factory=dict)  # a variant's own seeds instead of `seeds`
    candidates: str | None = None  # build-pairs work folder whose candidates a variant's own pairs start from
    out: str = "{work}/runs/{variant}/seed{seed}"   # each run's train.out_dir

    def validate(self) -> None:
        if not self.variants:
            raise ValueError("runs.variants: name at least one variant (an empty list of overrides is the recipe)")
        if unknown := set(self.variant_seeds) - set(self.variants):
            raise ValueError(f"runs.variant_seeds: {', '.join(sorted(unknown))} is not a variant")
        for seeds in [self.seeds, *self.variant_seeds.values()]:
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(f"runs.seeds: expected distinct seeds, got {seeds}")

    def seeds_of(self, variant: str) -> list[int]:
        return self.variant_seeds.get(variant, self.seeds)

    def pair_rules(self, variant: str) -> tuple[str, ...]:
        """The variant's build_pairs overrides: they make pairs of its own."""
        return tuple(o for o in self.variants[variant] if o.startswith("build_pairs."))


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
    findings: str = ""  # what the table shows, written after a run; the page prints it under the table
    subsets: dict[str, Subset] = field(default_factory=dict)  # `{subset:NAME}` in a command or eval set
    steps: list[Step] = field(default_factory=list)
    runs: Runs | None = None
    work_dir: str = "runs/studies/{name}"
    results_dir: str = "results/{name}"

    def validate(self) -> None:
        for name in [self.name, *self.subsets]:
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(f"name: letters, digits, '-', '_' or '.' only, got {name!r}")
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


@dataclass
class Command:
    kind: str                     # step | copy | pairs | train | eval
    args: list[str]               # the lpo-speech arguments (copy: source and destination folders)
    done: Path                    # skipped once this exists (train: the run folder)

    def line(self) -> str:
        if self.kind == "copy":
            return "cp " + " ".join(shlex.quote(f"{self.args[0]}/{f}") for f in CANDIDATE_FILES) + f" {self.args[1]}/"
        return shown(self.args)


def placeholders(study: Study) -> dict[str, object]:
    """`{work}` and each `{subset:NAME}`, for expand()."""
    work = Path(expand(study.work_dir, name=study.name))
    return {"work": work, **{f"subset:{n}": s.path(Path(expand(s.data, work=work))) for n, s in study.subsets.items()}}


def plan(study: Study) -> tuple[Path, list[Model]]:
    """The work folder and every model the study evaluates, in table order."""
    values = placeholders(study)
    work = values["work"]
    models = [Model(row, Path(expand(p, **values))) for row, p in study.eval.models.items()]
    if study.runs:
        for variant in study.runs.variants:
            for seed in study.runs.seeds_of(variant):
                out = Path(expand(study.runs.out, work=work, variant=variant, seed=seed))
                models.append(Model(variant, out / "model", seed))
    return work, models


def _eval_dir(work: Path, set_name: str, m: Model) -> Path:
    return work / "eval" / set_name / (m.row if m.seed is None else f"{m.row}-seed{m.seed}")


def pair_file(folder: Path, recipe: str, overrides: list[str]) -> Path:
    """A variant's pair file, named for what it holds: `pairs_ref.jsonl` with reference log-probs, or
    build-pairs' own `pairs.jsonl` when the trainer runs the reference (reference.source model)."""
    from lpo_speech.recipe import load_any_recipe

    source = load_any_recipe(recipe, list(overrides)).reference.source
    return folder / ("pairs_ref.jsonl" if source == "precomputed" else "pairs.jsonl")


def pair_paths(folder: Path, pairs: Path) -> list[str]:
    return [f"build_pairs.work_dir={folder}", f"data.pairs={pairs}"]


def study_commands(study: Study, work: Path, models: list[Model]) -> list[Command]:
    """Every command in order: steps, each variant's own pairs (if any) and runs, then the evals."""
    values = placeholders(study)
    commands = [Command("step", command_args(expand(s.run, **values)), Path(expand(s.done, **values)))
                for s in study.steps]
    runs = study.runs
    pair_dirs: dict[tuple[str, ...], Path] = {}   # pair overrides -> the folder of the first variant with them
    for variant in runs.variants if runs else []:
        common = [expand(o, **values) for o in runs.overrides]
        rules = tuple(expand(o, **values) for o in runs.pair_rules(variant))
        if rules and rules not in pair_dirs:
            pairs = pair_dirs[rules] = work / "variant-pairs" / variant
            if runs.candidates:
                commands.append(Command("copy", [expand(runs.candidates, **values), str(pairs)],
                                        pairs / CANDIDATE_FILES[0]))
            commands.append(Command("pairs", ["build-pairs", runs.recipe, *common, *rules,
                                              *pair_paths(pairs, pair_file(pairs, runs.recipe, [*common, *rules]))],
                                    pairs / "summary.json"))
        own = (pair_paths(pair_dirs[rules], pair_file(pair_dirs[rules], runs.recipe, [*common, *rules]))
               if rules else [])
        for seed in runs.seeds_of(variant):
            out = Path(expand(runs.out, work=work, variant=variant, seed=seed))
            items = [expand(o, **values, variant=variant, seed=seed)
                     for o in [*runs.overrides, *runs.variants[variant]]]
            commands.append(Command("train", ["train", runs.recipe, *items, *own, f"train.seed={seed}",
                                              f"train.out_dir={out}"], out))
    for set_name, manifest in study.eval.sets.items():
        data = expand(manifest, **values)
        for m in models:
            out = _eval_dir(work, set_name, m)
            commands.append(Command("eval", ["eval", "--wer", "--model", str(m.path), "--label", m.row, "--data", data,
                                             "--out", str(out), *study.eval.args], out / "metrics.json"))
    return commands


def run_study(path: str | Path, *, dry_run: bool = False) -> dict | None:
    from lpo_speech.recipe import load_any_recipe

    study = load_study(path)
    work, models = plan(study)
    commands = study_commands(study, work, models)
    for c in commands:  # a typo in a variant or step stops now, not after hours of earlier steps
        if c.kind in ("pairs", "train") or c.args[:1] in (["train"], ["build-pairs"]):
            load_any_recipe(c.args[1], [a for a in c.args[2:] if not a.startswith("-")])
    if dry_run:
        for c in commands:
            print(c.line())
        return None
    log = StepLog(total=len(commands))
    t0 = time.perf_counter()
    subsets = {n: (Path(expand(s.data, work=work)), s) for n, s in study.subsets.items()}
    written: set[str] = set()
    for c in commands:
        for name, (source, subset) in subsets.items():  # a subset is (re)written when a command first names it
            if name not in written and any(str(subset.path(source)) in a for a in c.args):
                subset.write(source, subset.path(source))
                written.add(name)
        if c.kind == "copy":
            copy_candidates(Path(c.args[0]), Path(c.args[1]), c.line(), log)
        elif c.kind == "train":
            train_command(c.args[1], c.args[2:], c.done, log=log)
        elif c.kind == "step" and c.args[:1] == ["train"]:
            out = next((Path(a.split("=", 1)[1]) for a in c.args if a.startswith("train.out_dir=")), None)
            resume = out is not None and (out / "checkpoints").exists() and not c.done.exists()
            run_command([*c.args, "--resume"] if resume else c.args, done=c.done, log=log)
        else:
            run_command(c.args, done=c.done, log=log)
    rows = []
    for set_name, manifest in study.eval.sets.items():
        compared = paired_failures(study.eval.baseline, [m.row for m in models],
                                   [_eval_dir(work, set_name, m) for m in models],
                                   Path(expand(manifest, **placeholders(study))))
        for m, extra in zip(models, compared):
            metrics = json.loads((_eval_dir(work, set_name, m) / "metrics.json").read_text())
            rows.append({"row": m.row, "seed": m.seed, "set": set_name, "model": str(m.path), "metrics": metrics,
                         **({"paired": extra} if extra else {})})
    out_dir = Path(expand(study.results_dir, name=study.name))
    made = provenance()
    commands = merge_history(log.entries, out_dir / "results.json", study.name, made)
    results = {"study": study.name, "title": study.title, "study_file": str(path), **made,
               "seconds": round(time.perf_counter() - t0), "commands": commands,
               "subsets": {n: {"path": str(s.path(src)), "data": str(src), "skip": s.skip, "first": s.first,
                               "all_styles": s.all_styles} for n, (src, s) in subsets.items()},
               "rows": rows, "summary": summarize(rows, study.eval.metrics)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plots = plot(results, study, out_dir)
    (out_dir / "README.md").write_text(report(results, study, plots))
    print(f"\nresults: {out_dir / 'README.md'}, {out_dir / 'results.json'}")
    return results


def copy_candidates(source: Path, dest: Path, line: str, log: StepLog) -> None:
    """A variant's pair folder starts from the shared scored candidates (skipped once it has some)."""
    if (dest / CANDIDATE_FILES[0]).exists():
        print(f"\n== {log.progress()}skip (done: {dest / CANDIDATE_FILES[0]}) {line}", flush=True)
        log.entries.append({"command": line, "ran": False, "seconds": 0.0})
        return
    if not (source / CANDIDATE_FILES[0]).is_file():
        raise UserError(f"{source / CANDIDATE_FILES[0]}: missing (runs.candidates names a build-pairs work folder "
                        "that a step makes)")
    print(f"\n== {log.progress()}{line}", flush=True)
    dest.mkdir(parents=True, exist_ok=True)
    for name in CANDIDATE_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, dest / name)
    log.entries.append({"command": line, "ran": True, "seconds": 0.0})
