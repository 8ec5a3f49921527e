"""The quality-comparison scripts in benchmarks/ parse their options and stop cleanly on a missing input
(their real runs take 10-40 minutes each and live in benchmarks/README.md, not in the suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("script", ["asr_compare.py", "tts_compare.py", "tts_sweep.py", "tts_rounds.py",
                                    "style_breakdown.py"])
def test_help(script):
    proc = _run(str(REPO / "benchmarks" / script), "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_sweep_without_pairs_is_one_line(tmp_path):
    proc = _run(str(REPO / "benchmarks" / "tts_sweep.py"), "--track", "emotion", "--compare", str(tmp_path / "none"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'none' / 'pairs' / 'pairs_ref.jsonl'}: missing "
                                                "(run benchmarks/tts_compare.py --track emotion first)"]


def test_sweep_refuses_a_compare_run_that_was_not_trained(tmp_path):
    pairs = tmp_path / "compare" / "pairs"
    pairs.mkdir(parents=True)
    (pairs / "pairs_ref.jsonl").write_text("")
    (pairs / "summary.json").write_text(json.dumps({"pairs": 0}))
    proc = _run(str(REPO / "benchmarks" / "tts_sweep.py"), "--track", "emotion", "--compare", str(tmp_path / "compare"),
                "--out", str(tmp_path / "out"), "--configs", "", "--also", "lpo-soup")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'compare' / 'lpo-soup' / 'model'}: missing "
                                                "(train it with tts_compare.py --losses lpo-soup)"]


@pytest.mark.parametrize("script, args, message", [
    ("tts_sweep.py", ["--track", "tts-sync", "--configs", "epochs-1,lr-9"],
     "--configs: unknown lr-9 (known: lr-1e-4, epochs-1, sft-weight-1.0, sft-cont)"),
    ("tts_compare.py", ["--track", "tts", "--losses", "lpo,orpo"],
     "--losses: unknown orpo (known: lpo, dpo, dpo-gamma, sft-cont, lpo-sft, lpo-seed1, lpo-seed2, lpo-seed3, lpo-seed4, lpo-seed5, lpo-soup, lpo-soup2, lpo-soup6)"),
])
def test_an_unknown_run_name_is_refused_before_any_stage(tmp_path, script, args, message):
    proc = _run(str(REPO / "benchmarks" / script), *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()


def test_rounds_without_a_world_is_one_line(tmp_path):
    proc = _run(str(REPO / "benchmarks" / "tts_rounds.py"), "--data", str(tmp_path / "none"),
                "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'none' / 'train_prompts.jsonl'}: missing "
                                                "(build the world with benchmarks/tts_compare.py --track tts-sync)"]
    assert not (tmp_path / "out").exists()


def test_rounds_take_disjoint_prompt_slices(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tts_rounds import prompt_slice

    manifest = tmp_path / "train_prompts.jsonl"
    manifest.write_text("".join(f'{{"id": "p{i}"}}\n' for i in range(5)))
    first, second = prompt_slice(manifest, 0, 2), prompt_slice(manifest, 2, 2)
    assert first.parent == tmp_path  # beside the manifest: its relative audio paths hold
    assert first.read_text().split() == ['{"id":', '"p0"}', '{"id":', '"p1"}']
    assert second.read_text().split() == ['{"id":', '"p2"}', '{"id":', '"p3"}']
    with pytest.raises(SystemExit) as e:
        prompt_slice(manifest, 4, 2)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {manifest}: 5 prompts, this round needs 6"


def test_a_runs_folder_keeps_one_set_of_overrides(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tts_compare import same_overrides

    out = tmp_path / "run"
    same_overrides(out, ["build_pairs.limit=400"])  # first call: recorded
    same_overrides(out, ["build_pairs.limit=400"])  # the same again: a resume
    with pytest.raises(SystemExit) as e:
        same_overrides(out, ["build_pairs.limit=800"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {out}: was made with other settings (overrides ['build_pairs.limit=400'] -> "
        "['build_pairs.limit=800']): rerun with the same settings, use a new output, or remove it and "
        "overrides.json to start over")
    with pytest.raises(SystemExit):
        same_overrides(out, [])


def test_style_breakdown_counts_failures_and_speaking_rate(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "emotion": "high"}\n{"id": "b", "emotion": "low"}\n')
    for label, rows in {"sft": [("a", False, "high", 2.0), ("b", True, "low", 4.0)],
                        "lpo": [("a", True, "low", 1.0), ("b", False, "low", 3.0),
                                ("z", True, "low", 9.0)]}.items():  # z: not in the manifest, not counted
        (tmp_path / label).mkdir()
        (tmp_path / label / "utterances.jsonl").write_text("".join(
            f'{{"id": "{i}", "failure": {str(f).lower()}, "emotion_top": "{e}", "duration_s": {d}, "terminated": true}}\n'
            for i, f, e, d in rows))
    proc = _run(str(REPO / "benchmarks" / "style_breakdown.py"), "--eval", str(tmp_path), "--prompts", str(prompts),
                "sft", "lpo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2:] == [
        "| sft | 2 | 1.000 | 1.00 / 1.00 | 1 | 0 / 0 | 1.000 | 0 / 1 | 3.00 | 1.00 / 1.00 |",
        "| lpo | 2 | 0.500 | 0.00 / 1.00 | 1 | 1 / 1 | 1.000 | 1 / 0 | 2.00 | 0.50 / 0.75 |"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt_id": "a", "chosen_tokens": [1, 2], "rejected_tokens": [1, 2, 3, 4]}\nnot json\n')
    proc = _run(str(REPO / "benchmarks" / "style_breakdown.py"), "--pairs", str(pairs), "--prompts", str(prompts))
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {pairs}:2: not JSON (Expecting value)"
    pairs.write_text('{"prompt_id": "a", "chosen_tokens": [1, 2], "rejected_tokens": [1, 2, 3, 4]}\n')
    proc = _run(str(REPO / "benchmarks" / "style_breakdown.py"), "--pairs", str(pairs), "--prompts", str(prompts))
    assert proc.stdout.splitlines()[2:] == ["| all | 1 | 2.00 | 1.00 | 1.00 |", "| high | 1 | 2.00 | 1.00 | 1.00 |"]


def test_mcnemar_p_by_hand():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from style_breakdown import mcnemar_p

    assert mcnemar_p(0, 6) == 2 / 64  # all six discordant prompts one way: 2 x (1/2)^6
    assert mcnemar_p(1, 4) == 2 * (1 + 5) / 32
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0


def test_sweep_seeds_name_each_extra_run():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tts_sweep import with_seeds

    runs = with_seeds({"beta-1.0": ["loss.beta=1.0"], "epochs-3": ["train.epochs=3"]}, [0, 2])
    assert runs == {"beta-1.0": ["loss.beta=1.0"], "beta-1.0_seed-2": ["loss.beta=1.0", "train.seed=2"],
                    "epochs-3": ["train.epochs=3"], "epochs-3_seed-2": ["train.epochs=3", "train.seed=2"]}
    proc = _run(str(REPO / "benchmarks" / "tts_sweep.py"), "--track", "tts-sync", "--seeds", "0,x")
    assert proc.returncode == 2 and "--seeds: comma-separated integers, got '0,x'" in proc.stderr


def test_every_style_keeps_each_prompt_and_adds_the_other_styles(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tts_compare import every_style

    manifest = tmp_path / "test_style_prompts.jsonl"
    manifest.write_text('{"id": "a", "text": "One.", "emotion": "high", "speaker_audio": "ref/x.wav"}\n'
                        '{"id": "b", "text": "Two.", "emotion": "low"}\n'
                        '{"id": "c", "text": "Three.", "emotion": "neutral"}\n')
    out = every_style(manifest)
    assert out == tmp_path / "test_style_prompts_all_styles.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["text"], r["emotion"]) for r in rows[:3]] == [
        ("a", "One.", "high"), ("a-low", "One.", "low"), ("a-neutral", "One.", "neutral")]
    assert len(rows) == 9 and rows[1]["speaker_audio"] == "ref/x.wav"
    assert {r["emotion"] for r in rows if r["text"] == "Two."} == {"high", "low", "neutral"}
    manifest.write_text('{"id": "a", "text": "One."}\n')
    with pytest.raises(SystemExit) as e:
        every_style(manifest)
    assert e.value.code == 2 and "no prompt has an 'emotion'" in capsys.readouterr().err


def test_sweep_scores_on_dev_or_in_the_compare_eval_on_test():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tts_sweep import scoring

    data, out, compare = Path("w"), Path("sweep"), Path("cmp")
    assert scoring("emotion-sync", data, out, compare, test=False) == (
        data / "dev_style_prompts.jsonl", out / "eval", "recipe")
    # on test, where tts_compare scored SFT and its `lpo` run (the recipe's), so both resume
    assert scoring("emotion-sync", data, out, compare, test=True) == (
        data / "test_style_prompts.jsonl", compare / "eval", "lpo")
    assert scoring("tts-sync", data, out, compare, test=True)[0] == data / "test_prompts.jsonl"


def test_a_failed_stage_stops_with_its_status_and_one_line(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tts_compare import run

    with pytest.raises(SystemExit) as e:
        run([sys.executable, "-c", "import sys; sys.exit(2)"], done=None)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: stage failed (exit status 2): ")


def test_each_soup_averages_distinct_trainable_runs():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tts_compare import LOSSES, SOUPS

    for runs in SOUPS.values():
        assert all(m in LOSSES for m in runs)  # every member is a run tts_compare can train
        assert len(runs) >= 2 and len(runs) == len(set(runs))
    assert not set(SOUPS["lpo-soup"]) & set(SOUPS["lpo-soup2"])  # the two three-seed soups are independent
    assert not set(SOUPS) & set(LOSSES)
