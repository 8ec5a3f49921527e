"""`lpo-speech study`: a study file runs its steps, variants x seeds and evals, resumes, and writes one
results schema (results.json, README.md, a plot) that records commit, commands, machine and date."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

from lpo_speech.study import expand, summarize

RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"


@pytest.fixture(scope="module")
def asr_data(tmp_path_factory):
    from lpo_speech.synthetic.synth import make_asr_data

    out = tmp_path_factory.mktemp("study") / "data"
    make_asr_data(out, n_train=4, n_test=2, styles=["espeak"], workers=1, progress=False)
    return out


def study_text(whisper, data) -> str:
    common = (f'"model.path={whisper}", "build_pairs.manifest={data}/train.jsonl", "build_pairs.work_dir={{work}}/pairs", '
              '"data.pairs={work}/pairs/pairs_ref.jsonl", "build_pairs.batch_size=4", "build_pairs.perturbations=2", '
              '"train.batch_size=2", "train.max_steps=1", "train.warmup_steps=0", "runtime.device=cpu"')
    return f"""name: tiny
title: "Tiny: LPO vs DPO"
about: A two-row study on four utterances.
work_dir: work
steps:
  - run: lpo-speech build-pairs {RECIPE} {common.replace('"', '').replace(', ', ' ')} --quiet
    done: "{{work}}/pairs/pairs_ref.jsonl"
runs:
  recipe: {RECIPE}
  overrides: [{common}, "train.log_every=1"]
  variants:
    lpo: []
    dpo: [loss.type=sigmoid, loss.beta=0.1]
  seeds: [0, 1]
eval:
  sets: {{in-domain: "{data}/test.jsonl"}}
  models: {{base: "{whisper}"}}
  args: [--quiet, --device, cpu]
  baseline: base
  metrics: [wer, cer]
"""


def test_a_study_runs_resumes_and_writes_one_schema(tmp_path, lpo, whisper_tiny, asr_data):
    (tmp_path / "s.yaml").write_text(study_text(whisper_tiny, asr_data))
    dry = lpo("study", "s.yaml", "--dry-run", cwd=tmp_path)
    assert dry.stdout.count("lpo-speech train ") == 4 and dry.stdout.count("lpo-speech eval ") == 5
    assert not (tmp_path / "work").exists()  # a dry run runs nothing

    out = lpo("study", "s.yaml", cwd=tmp_path)
    assert "[1/10]" in out.stdout and "[10/10]" in out.stdout  # progress over every command
    res = json.loads((tmp_path / "results" / "tiny" / "results.json").read_text())
    assert {"study", "commit", "uncommitted_changes", "date", "machine", "commands", "rows", "summary"} <= set(res)
    assert res["machine"]["cores"] >= 1 and res["commit"] and len(res["commit"]) == 40
    assert [c["ran"] for c in res["commands"]] == [True] * 10
    assert sum(c["command"].startswith("lpo-speech train ") for c in res["commands"]) == 4
    rows = {(r["row"], r["seed"]): r for r in res["rows"]}
    assert set(rows) == {("base", None), ("lpo", 0), ("lpo", 1), ("dpo", 0), ("dpo", 1)}
    for r in res["rows"]:  # each number is what eval wrote for that model
        ev = tmp_path / "work" / "eval" / "in-domain" / (r["row"] if r["seed"] is None else f"{r['row']}-seed{r['seed']}")
        assert r["metrics"] == json.loads((ev / "metrics.json").read_text()) and r["metrics"]["n"] == 2
    lpo_wer = [rows["lpo", s]["metrics"]["wer"] for s in (0, 1)]
    got = {(s["row"], s["metric"]): s for s in res["summary"]}
    assert got["lpo", "wer"]["n"] == 2 and got["lpo", "wer"]["mean"] == pytest.approx(sum(lpo_wer) / 2)
    assert got["base", "wer"]["n"] == 1 and got["base", "wer"]["sd"] is None
    page = (tmp_path / "results" / "tiny" / "README.md").read_text()
    assert page.startswith("# Tiny: LPO vs DPO") and "| dpo | 2 |" in page and "in-domain wer vs base" in page
    assert "lpo-speech study s.yaml" in page and res["commit"] in page
    assert (tmp_path / "results" / "tiny" / "wer.png").stat().st_size > 1000
    # each run trained with its own seed and variant
    assert json.loads((tmp_path / "work" / "runs" / "dpo" / "seed1" / "metrics.jsonl").read_text().splitlines()[0])
    assert "seed: 1\n" in (tmp_path / "work" / "runs" / "dpo" / "seed1" / "config.yaml").read_text()

    again = lpo("study", "s.yaml", cwd=tmp_path)  # everything done: all skipped, same rows
    res2 = json.loads((tmp_path / "results" / "tiny" / "results.json").read_text())
    assert [c["ran"] for c in res2["commands"]] == [False] * 10 and "skip (done:" in again.stdout
    assert res2["rows"] == res["rows"]


def test_summary_mean_and_sample_sd_by_hand():
    rows = [{"row": "a", "set": "s", "metrics": {"wer": w}} for w in (0.1, 0.2, 0.3)]
    rows.append({"row": "b", "set": "s", "metrics": {"wer": 0.5, "cer": 0.25}})
    got = {(s["row"], s["metric"]): s for s in summarize(rows, ["wer", "cer"])}
    assert got["a", "wer"]["mean"] == pytest.approx(0.2) and got["a", "wer"]["sd"] == pytest.approx(0.1)
    assert ("a", "cer") not in got and got["b", "cer"] == {"row": "b", "set": "s", "metric": "cer", "mean": 0.25,
                                                          "sd": None, "n": 1}


def test_expand_leaves_other_braces():
    assert expand("x={a: 1} {work}/y{seed}", work="w", seed=3) == "x={a: 1} w/y3"


@pytest.mark.parametrize("body, message", [
    ("name: a\ntitle: t\neval: {sets: {}}\n", "eval.sets: name at least one eval set"),
    ("name: a\ntitle: t\neval: {sets: {x: y}, baseline: zz}\n", "eval.baseline: 'zz' is not a row"),
    ("name: a b\ntitle: t\neval: {sets: {x: y}}\n", "name: letters, digits"),
    ("name: a\ntitle: t\neval: {sets: {x: y}}\nstepz: []\n", "unknown key 'stepz'"),
    (f"name: a\ntitle: t\neval: {{sets: {{x: y}}}}\nruns: {{recipe: {RECIPE}, variants: {{v: [loss.betaa=1]}}}}\n",
     "unknown key 'loss.betaa'"),
])
def test_bad_study_files_are_one_line(tmp_path, body, message):
    (tmp_path / "s.yaml").write_text(body)
    p = subprocess.run([sys.executable, "-m", "lpo_speech.cli", "study", "s.yaml"], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and message in p.stderr, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.yaml"]  # nothing left behind


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_loads_and_names_valid_recipes(path, lpo, tmp_path):
    """--dry-run loads the study and validates every variant's recipe up front, running nothing."""
    proc = lpo("study", str(path), "--dry-run", cwd=REPO)
    lines = proc.stdout.splitlines()
    assert lines and all(line.startswith("lpo-speech ") for line in lines)
    assert sum(" train " in f" {line} " for line in lines) >= 3
