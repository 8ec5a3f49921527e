"""`lpo-speech study`: a study file runs its steps, variants x seeds and evals, resumes, and writes one
results schema (results.json, README.md, a plot) that records commit, commands, machine and date; derived
eval sets, variants with their own pairs and seeds, the prompt-by-prompt failure comparison; every
committed results folder is in that schema and names its study command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

from lpo_speech.errors import UserError

from lpo_speech.study import Subset, expand, load_study, plan
from lpo_speech.study_report import paired_failures, paired_table, summarize

RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"


@pytest.fixture(scope="module")
def asr_data(tmp_path_factory):
    from lpo_speech.synthetic.synth import make_asr_data

    out = tmp_path_factory.mktemp("study") / "data"
    make_asr_data(out, n_train=4, n_test=2, styles=["espeak"], workers=1, progress=False)
    return out


def study_text(whisper, data) -> str:
    common = (f'"model.path={whisper}", "build_pairs.manifest={data}/train.jsonl", "build_pairs.work_dir={{work}}/pairs", '
              '"data.pairs={work}/pairs/pairs.jsonl", "build_pairs.batch_size=4", "build_pairs.perturbations=2", '
              '"train.batch_size=2", "train.max_steps=1", "train.warmup_steps=0", "runtime.device=cpu"')
    return f"""name: tiny
title: "Tiny: LPO vs DPO"
about: A two-row study on four utterances.
work_dir: work
steps:
  - run: lpo-speech build-pairs {RECIPE} {common.replace('"', '').replace(', ', ' ')} --quiet
    done: "{{work}}/pairs/summary.json"
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


@pytest.mark.slow
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
    assert [(c["ran"], c["ran_now"]) for c in res["commands"]] == [(True, True)] * 10
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

    # everything done: all skipped, same rows; findings written after the run appear under the table
    (tmp_path / "s.yaml").write_text(study_text(whisper_tiny, asr_data) + "findings: LPO and DPO tie here.\n")
    again = lpo("study", "s.yaml", cwd=tmp_path)
    res2 = json.loads((tmp_path / "results" / "tiny" / "results.json").read_text())
    assert [(c["ran"], c["ran_now"]) for c in res2["commands"]] == [(True, False)] * 10 and "skip (done:" in again.stdout
    # each command keeps the commit and date of the invocation that ran it
    assert [(c["commit"], c["date"]) for c in res2["commands"]] == [(res["commit"], res["date"])] * 10
    assert res2["rows"] == res["rows"]
    assert "## What it shows\n\nLPO and DPO tie here." in (tmp_path / "results" / "tiny" / "README.md").read_text()


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
    assert lines and all(line.startswith(("lpo-speech ", "cp ")) for line in lines)
    assert sum(" train " in f" {line} " for line in lines) >= 3


def test_subsets_skip_keep_and_ask_for_every_style(tmp_path):
    src = tmp_path / "test_style_prompts.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "text": f"T{i}.", "emotion": s, "speaker_audio": "ref/x.wav"}) + "\n"
                           for i, s in enumerate(["high", "low", "neutral", "high"])))
    first = Subset(data=str(src), first=2)
    assert first.path(src) == tmp_path / "test_style_prompts_first2.jsonl"  # beside it: relative audio holds
    first.write(src, first.path(src))
    assert [json.loads(x)["id"] for x in first.path(src).read_text().splitlines()] == ["p0", "p1"]
    rest = Subset(data=str(src), skip=1, first=2, all_styles=True)
    assert rest.path(src).name == "test_style_prompts_from1_first2_all_styles.jsonl"
    rest.write(src, rest.path(src))
    rows = [json.loads(x) for x in rest.path(src).read_text().splitlines()]
    assert [(r["id"], r["emotion"]) for r in rows] == [  # each prompt keeps its id in its own style
        ("p1", "low"), ("p1-high", "high"), ("p1-neutral", "neutral"),
        ("p2", "neutral"), ("p2-high", "high"), ("p2-low", "low")]
    assert {r["speaker_audio"] for r in rows} == {"ref/x.wav"} and {r["text"] for r in rows} == {"T1.", "T2."}
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"id": "a", "text": "A."}\n')
    with pytest.raises(UserError, match="no prompt has an 'emotion'"):
        Subset(data=str(plain), all_styles=True).write(plain, tmp_path / "out.jsonl")


TTS_RECIPE = REPO / "recipes" / "tts" / "tiny.yaml"


def test_variants_with_pair_rules_build_their_own_pairs_from_shared_candidates(tmp_path, lpo):
    (tmp_path / "s.yaml").write_text(f"""name: pairs
title: t
work_dir: w
steps:
  - run: build-pairs {TTS_RECIPE} build_pairs.work_dir={{work}}/pairs data.pairs={{work}}/pairs/pairs_ref.jsonl
    done: "{{work}}/pairs/pairs_ref.jsonl"
subsets:
  test-9: {{data: data/test_prompts.jsonl, first: 9}}
runs:
  recipe: {TTS_RECIPE}
  overrides: ["build_pairs.work_dir={{work}}/pairs", "data.pairs={{work}}/pairs/pairs_ref.jsonl"]
  candidates: "{{work}}/pairs"
  variants:
    lpo: []
    more: [build_pairs.limit=400]
    more-dpo: [build_pairs.limit=400, loss.type=sigmoid]
  seeds: [0]
  variant_seeds: {{lpo: [0, 2]}}
eval:
  sets: {{test: "{{subset:test-9}}"}}
  models: {{sft: base}}
  baseline: sft
""")
    lines = lpo("study", "s.yaml", "--dry-run", cwd=tmp_path).stdout.splitlines()
    assert not (tmp_path / "w").exists() and not (tmp_path / "data").exists()  # a dry run writes nothing
    own = "build_pairs.work_dir=w/variant-pairs/more data.pairs=w/variant-pairs/more/pairs_ref.jsonl"
    # the shared candidates are copied in once, right before the first variant that needs its own pairs
    assert lines[3] == "cp w/pairs/candidates.jsonl w/pairs/candidates.jsonl.settings.json w/variant-pairs/more/"
    builds = [x for x in lines if x.startswith("lpo-speech build-pairs")]
    assert len(builds) == 2 and builds[1].endswith(f"build_pairs.limit=400 {own}")  # one for both `more` rows
    trains = [x for x in lines if x.startswith("lpo-speech train")]
    assert [t.split("train.out_dir=")[1] for t in trains] == [
        "w/runs/lpo/seed0", "w/runs/lpo/seed2", "w/runs/more/seed0", "w/runs/more-dpo/seed0"]
    assert "train.seed=2" in trains[1] and own not in trains[0] and all(own in t for t in trains[2:])
    assert sum(x.startswith("cp ") for x in lines) == 1
    evals = [x for x in lines if x.startswith("lpo-speech eval")]
    assert len(evals) == 5 and all("--data data/test_prompts_first9.jsonl" in x for x in evals)
    _, models = plan(load_study(tmp_path / "s.yaml"))
    assert [(m.row, m.seed) for m in models] == [("sft", None), ("lpo", 0), ("lpo", 2), ("more", 0), ("more-dpo", 0)]


def test_failures_are_compared_prompt_by_prompt_and_per_style(tmp_path):
    (tmp_path / "s.yaml").write_text("name: f\ntitle: t\nwork_dir: w\neval:\n  sets: {dev: m.jsonl}\n"
                                     "  models: {sft: a, lpo: b}\n  baseline: sft\n")
    study = load_study(tmp_path / "s.yaml")
    work, models = plan(study)
    work = tmp_path / work
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "text": "x", "emotion": s}) + "\n"
                                for i, s in [("1", "high"), ("2", "high"), ("3", "low"), ("4", "low")]))
    utts = {"sft": [(True, 2.0), (False, 2.0), (True, 4.0), (False, 4.0)],
            "lpo": [(False, 1.0), (True, 3.0), (False, 2.0), (True, 4.0)]}
    for row, rows in utts.items():
        d = work / "eval" / "dev" / row
        (d / row).mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"wer": 0.5, "emotion_acc": 0.5}))
        (d / row / "utterances.jsonl").write_text("".join(
            json.dumps({"id": str(i + 1), "failure": f, "terminated": True, "duration_s": s}) + "\n"
            for i, (f, s) in enumerate(rows)))
    base, run = paired_failures(study.eval.baseline, [m.row for m in models],
                                [work / "eval" / "dev" / m.row for m in models], manifest)
    assert base["new"] == base["fixed"] == 0 and base["failures"] == 2 and base["p"] == 1.0
    assert run == {"vs": "sft", "failures": 2, "new": 2, "fixed": 2, "p": 1.0, "by_style": {
        "high": {"failures": 1, "duration_ratio": pytest.approx((0.5 + 1.5) / 2)},
        "low": {"failures": 1, "duration_ratio": pytest.approx((0.5 + 1.0) / 2)}}}


def test_the_page_shows_the_failure_comparison():
    paired = {"vs": "sft", "failures": 2, "new": 2, "fixed": 2, "p": 1.0,
              "by_style": {"high": {"failures": 1, "duration_ratio": 1.0}, "low": {"failures": 1, "duration_ratio": None}}}
    rows = [{"row": "lpo", "seed": 1, "set": "dev", "paired": paired}, {"row": "x", "seed": None, "set": "test"}]
    assert paired_table({"rows": rows}, ["dev", "test"]) == [
        "Failures on dev, prompt by prompt against sft (new: the row fails where the baseline does not; fixed: the "
        "reverse; p: exact two-sided sign test on the two):", "",
        "| row | seed | failures | new / fixed | p | failures high / low | duration x sft high / low |",
        "|---|---|---|---|---|---|---|", "| lpo | 1 | 2 | 2 / 2 | 1.000 | 1 / 1 | 1.00 / - |", ""]


@pytest.mark.parametrize("path", sorted((REPO / "results").glob("*/results.json")), ids=lambda p: p.parent.name)
def test_every_committed_result_is_one_study_in_one_schema(path):
    """Each results folder names the study file that makes it (on its page too), with commit, commands,
    machine and date; rows migrated from before the runner say what measured them and where."""
    res = json.loads(path.read_text())
    assert {"study", "title", "study_file", "commit", "date", "machine", "commands", "rows", "summary"} <= set(res)
    assert res["study"] == path.parent.name and (REPO / res["study_file"]).is_file()
    assert f"lpo-speech study {res['study_file']}" in (path.parent / "README.md").read_text()
    assert res["rows"] and all({"row", "seed", "set", "metrics"} <= set(r) for r in res["rows"])
    assert res["commands"] and res["machine"]["cores"]
    study = load_study(REPO / res["study_file"])
    rows = set(study.eval.models) | set(study.runs.variants if study.runs else [])
    assert {r["row"] for r in res["rows"]} <= rows  # every row is one the study makes
    if res.get("provenance", {}).get("migrated"):
        sources = res["provenance"]["sources"]
        assert res["provenance"]["reproduce"] == f"lpo-speech study {res['study_file']}"
        assert all(len(s["commit"]) == 40 and s["command"] and s["date"] for s in sources)
        assert all(any(r["source"].startswith(s["file"]) for s in sources) for r in res["rows"])
    else:
        assert len(res["commit"]) == 40


def test_demo_verdict_reads_the_run_against_the_study():
    """The demo's summary compares LPO with the row its full-size study compares it with, set by set,
    and says whether the run points the way the study found, or another way at demo size."""
    from lpo_speech.demo import _lines, verdict

    metrics = {"in-domain": {"sft-continued": {"wer": 0.20}, "lpo": {"wer": 0.15}},
               "out-of-domain": {"sft-continued": {"wer": 0.40}, "lpo": {"wer": 0.44}}}
    v = verdict("asr", metrics)  # the ASR study found LPO not better than SFT continued in either set
    assert v["sets"]["in-domain"]["ratio"] == pytest.approx(0.75) and v["sets"]["in-domain"]["lpo_better"]
    assert not v["sets"]["in-domain"]["as_the_study"] and v["sets"]["out-of-domain"]["as_the_study"]
    assert _lines("asr", v) == [
        "in-domain: LPO wer 0.1500 vs sft-continued 0.2000 (x0.750, better); "
        "out-of-domain: LPO wer 0.4400 vs sft-continued 0.4000 (x1.100, not better).",
        "The full-size study (results/asr-whisper/README.md) found LPO against sft-continued in-domain: not "
        "better, out-of-domain: not better; at demo size this run points another way on in-domain."]
    same = verdict("emotion", {"in-domain": {"sft": {"emotion_acc": 0.5}, "lpo": {"emotion_acc": 0.6}},
                               "out-of-domain": {"sft": {"emotion_acc": 0.5}, "lpo": {"emotion_acc": 0.4}}})
    assert _lines("emotion", same)[1].endswith("found LPO against sft in-domain: better; this run points the same way.")


def test_demo_lanes_deal_the_tracks_out():
    from lpo_speech.demo import lanes

    assert lanes(("asr", "tts", "emotion"), 3) == [("asr",), ("tts",), ("emotion",)]
    assert lanes(("asr", "tts", "emotion"), 2) == [("asr", "emotion"), ("tts",)]
    assert lanes(("asr", "tts", "emotion"), 1) == [("asr", "tts", "emotion")]
    assert lanes(("tts",), 3) == [("tts",)]
