"""Nothing bad gets in, nothing good gets lost: every mistake a user can make is one line on stderr
(`error: <where>: <what>`), exit status 2, no traceback, and no file left behind in the working folder.

Most cases call `lpo_speech.cli.main` in-process (the same code path as the console script, minus the
interpreter start); a real process boundary is used where it matters: resource use of YAML bombs,
and what torchrun prints after a child's one-line error.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, make_pairs
from lpo_speech.cli import main

BASE = "model: {path: m}\ndata: {pairs: p.jsonl}\ntrain: {out_dir: run}\n"
TTS = ("track: tts\nmodel: {path: m}\ndata: {pairs: p.jsonl}\ntrain: {out_dir: run}\n"
       "build_pairs:\n  prompts: prompts.jsonl\n  work_dir: work\n")


def bomb(indent: str = "  ", levels: int = 9) -> str:
    """Billion laughs: `levels` nested anchors of ten aliases each (10**levels strings once expanded)."""
    lines = [f"{indent}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


BOMBS = {
    "model.path": "model:\n  path:\n" + bomb("    ") + "data: {pairs: p.jsonl}\ntrain: {out_dir: run}\n",
    "tts judge": TTS + "  judge:\n" + bomb("    "),
    "unknown key": BASE + "junk:\n" + bomb(),
    "merge key": "base: &b {path: m}\nmodel: {<<: *b}\ndata: {pairs: p.jsonl}\ntrain: {out_dir: run}\n",
    "top level": bomb(""),
}


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def one_line(capsys, root: Path, args: list[str], *expected: str, known_leftovers: frozenset = frozenset()) -> str:
    """Run the CLI in-process; assert exit 2, one `error: ` line holding `expected`, nothing left behind."""
    before = snapshot(root)
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse errors exit from inside the parser
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err[-2000:])
    assert err.endswith("\n") and err.count("\n") == 1, err[-3000:]
    assert err.startswith("error: ") and "Traceback" not in err + out, err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    left = snapshot(root) - before
    assert left <= known_leftovers, f"left behind: {sorted(left)}"
    return err.strip()


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------------- recipes

RECIPE_CASES = [
    # non-finite numbers: refused in any float field, from the file or from an override
    (BASE, ["loss.beta=.inf"], "loss.beta: must be a finite number"),
    (BASE, ["loss.beta=nan"], "loss.beta: must be a finite number"),
    (BASE, ["train.lr=1e999"], "train.lr: must be a finite number"),
    (BASE.replace("out_dir: run", "out_dir: run, epochs: .inf"), [], "train.epochs: must be a finite number"),
    (BASE, ["train.adam_betas=[0.9, .nan]"], "train.adam_betas[1]: must be a finite number"),
    (BASE, ["model.lora={r: 4, alpha: .inf}"], "model.lora.alpha: must be a finite number"),
    (BASE, ["train.max_grad_norm=-.inf"], "train.max_grad_norm: must be a finite number"),
    # ranges
    (BASE, ["loss.beta=1000"], "loss.beta: must be > 0 and <= 100"),
    (BASE, ["loss.r2=0"], "loss.r2: must be > 0 and <= 100"),
    (BASE, ["loss.gamma=5000"], "loss.gamma: must be in [0, 1000]"),
    (BASE, ["loss.sft_weight=-1"], "loss.sft_weight: must be in [0, 1000]"),
    (BASE, ["train.lr=2"], "train.lr: must be > 0 and <= 1"),
    (BASE, ["train.lr=1e-4", "train.min_lr=1e-3"], "train.min_lr: must be in [0, lr]"),
    (BASE, ["train.adam_eps=0.5"], "train.adam_eps: must be > 0 and <= 0.01"),
    (BASE, ["train.weight_decay=100"], "train.weight_decay: must be in [0, 10]"),
    (BASE, ["train.max_grad_norm=-1"], "train.max_grad_norm: must be >= 0"),
    (BASE, ["train.seed=123456789012345678901234567890"], "train.seed: out of range"),
    # TTS free-form mappings
    (TTS + "  min_margins: {cer: .nan}\n", [], "build_pairs.min_margins.cer: must be a finite number"),
    (TTS + "  max_chosen_deficit: {sim: .inf}\n", [], "build_pairs.max_chosen_deficit.sim: must be a finite number"),
    (TTS + "  judge: {type: faster-whisper, model: bundled, beam: .nan}\n", [],
     "build_pairs.judge.beam: must be a finite number"),
    # shapes, keys, syntax
    ("- 1\n- 2\n", ["train.lr=1e-6"], "expected a mapping of sections"),
    ("just a string\n", [], "expected a mapping of sections"),
    (BASE, ["train.lrr=1"], "unknown key 'train.lrr'"),
    (BASE, ["train.lr=[1,"], "override 'train.lr=[1,': invalid YAML"),
    (BASE, ["=1"], "override '=1': expected key=value with a dotted key"),
    (BASE + "track: [asr]\n", [], "unknown track ['asr']"),
    ("model: " + "[" * 2000 + "]" * 2000 + "\n", [], "invalid YAML (nested too deeply)"),
    ("train: {seed: " + "7" * 5000 + "}\n", [], "invalid YAML (Exceeds the limit"),
]


@pytest.mark.parametrize("text, overrides, message", RECIPE_CASES, ids=[c[2][:45] for c in RECIPE_CASES])
def test_bad_recipe(work, capsys, text, overrides, message):
    (work / "r.yaml").write_text(text)
    where = "error: override" if message.startswith("override") else "error: r.yaml"  # the file, or the override
    one_line(capsys, work, ["train", "r.yaml", *overrides], where, message)


def test_non_utf8_recipe(work, capsys):
    (work / "r.yaml").write_bytes(BASE.encode() + b"# caf\xe9\n")
    one_line(capsys, work, ["train", "r.yaml"], "error: r.yaml: not UTF-8 text")


def test_long_values_are_truncated(work, capsys):
    (work / "r.yaml").write_text(BASE)
    err = one_line(capsys, work, ["train", "r.yaml", "model.path=[" + ", ".join(["x" * 50] * 2000) + "]"],
                   "model.path: expected str, got ['xxxx")
    assert len(err) < 200
    err = one_line(capsys, work, ["train", "r.yaml", "train.seed='" + "9" * 100_000 + "'"],
                   "train.seed: expected int, got '9999", "... (truncated)")
    assert len(err) < 200


@pytest.mark.parametrize("where", sorted(BOMBS))
def test_yaml_bomb_is_refused(work, capsys, where):
    (work / "r.yaml").write_text(BOMBS[where])
    one_line(capsys, work, ["train", "r.yaml"], "error: r.yaml:", ": YAML aliases (*name) are not supported in recipes")


def test_yaml_alias_in_override(work, capsys):
    (work / "r.yaml").write_text(BASE)
    one_line(capsys, work, ["train", "r.yaml", "model.path=*a"], "override 'model.path=*a': YAML aliases")


def test_yaml_bombs_cost_nothing(tmp_path):
    """A real process: every bomb (and one in an override) stops in well under 2 s and 200 MB."""
    for name, text in BOMBS.items():
        (tmp_path / f"{name.replace(' ', '_').replace('.', '_')}.yaml").write_text(text)
    (tmp_path / "base.yaml").write_text(BASE)
    script = textwrap.dedent("""
        import contextlib, io, json, resource, sys, time
        from pathlib import Path
        from lpo_speech.cli import main
        import lpo_speech.recipe, lpo_speech.tts.recipe  # imported before measuring
        runs = [["train", p.name] for p in sorted(Path('.').glob('*.yaml')) if p.name != 'base.yaml']
        runs.append(["train", "base.yaml", "model.path=[&a [lol, lol, lol], *a, *a]"])
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report = []
        for args in runs:
            err = io.StringIO()
            t = time.perf_counter()
            with contextlib.redirect_stderr(err):
                rc = main(args)
            report.append({"args": args, "rc": rc, "s": time.perf_counter() - t, "err": err.getvalue()})
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        print(json.dumps({"runs": report, "grown_mb": grown}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["runs"]) == len(BOMBS) + 1
    for run in result["runs"]:
        assert run["rc"] == 2 and run["s"] < 2.0, run
        assert run["err"].count("\n") == 1 and "YAML aliases (*name) are not supported" in run["err"], run
    assert result["grown_mb"] < 200, result


# ------------------------------------------------------------------------ manifests, pair files

PAIR = {"id": "a", "prompt_tokens": [1, 2], "chosen_tokens": [3, 4], "rejected_tokens": [5]}

PAIR_FILE_CASES = [
    ("non-utf8", json.dumps(PAIR).encode() + b"\n" + b'{"id": "b\xff"}\n', "in.jsonl:2: not UTF-8 text"),
    ("duplicate id", (json.dumps(PAIR) + "\n" + json.dumps({**PAIR, "id": "b"}) + "\n" + json.dumps(PAIR) + "\n").encode(),
     "in.jsonl:3: duplicate id 'a' (first on line 1)"),
    ("unterminated string", b'{"id": "a}\n', "in.jsonl:1: malformed JSON (Unterminated string starting at column 8)"),
    ("not an object", b"[1, 2]\n", "in.jsonl:1: expected a JSON object"),
    ("empty", b"", "in.jsonl: no records"),
    ("blank lines only", b"\n  \n", "in.jsonl: no records"),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000 + b"\n", "in.jsonl:1: malformed JSON (nested too deeply)"),
    ("NaN ref logp", json.dumps({**PAIR, "ref_chosen_logp": float("nan"), "ref_rejected_logp": -1.0}).encode() + b"\n",
     "in.jsonl:1: field 'ref_chosen_logp': must be a finite number, got nan"),
    ("Infinity ref logp", json.dumps({**PAIR, "ref_chosen_logp": -1.0, "ref_rejected_logp": float("-inf")}).encode() + b"\n",
     "in.jsonl:1: field 'ref_rejected_logp': must be a finite number, got -inf"),
    ("huge integer", b'{"id": "a", "prompt_tokens": [' + b"1" * 5000 + b']}\n', "in.jsonl:1: malformed JSON (Exceeds"),
]


@pytest.mark.parametrize("content, message", [c[1:] for c in PAIR_FILE_CASES], ids=[c[0] for c in PAIR_FILE_CASES])
def test_bad_pair_file_for_ref_logps(work, capsys, tiny_lm, content, message):
    (work / "r.yaml").write_text(f"model: {{path: {tiny_lm}}}\ndata: {{pairs: p.jsonl}}\ntrain: {{out_dir: run}}\n")
    (work / "in.jsonl").write_bytes(content)
    one_line(capsys, work, ["ref-logps", "r.yaml", "--in", "in.jsonl", "--out", "out/ref.jsonl", "--quiet"],
             "error: " + message)


@pytest.mark.parametrize("field, value", [("ref_chosen_logp", "NaN"), ("ref_rejected_logp", "Infinity")])
def test_non_finite_reference_logps_stop_training(work, capsys, tiny_lm, field, value):
    """NaN/Infinity are legal in Python's JSON: the pair file is refused, and no model is written."""
    rows = [json.dumps({**PAIR, "id": f"p{i}", "ref_chosen_logp": -1.0, "ref_rejected_logp": -2.0}) for i in range(8)]
    rows[5] = rows[5].replace(f'"{field}": ' + ("-1.0" if field == "ref_chosen_logp" else "-2.0"), f'"{field}": {value}')
    (work / "p.jsonl").write_text("\n".join(rows) + "\n")
    (work / "r.yaml").write_text(f"model: {{path: {tiny_lm}}}\ndata: {{pairs: p.jsonl}}\n"
                                 "train: {out_dir: run, max_steps: 2, batch_size: 2}\n")
    one_line(capsys, work, ["train", "r.yaml", "--quiet"], f"error: p.jsonl:6: field '{field}': must be a finite number")
    assert not (work / "run").exists()


def nan_wav(path: Path, bad: float = float("nan")) -> Path:
    audio = (0.1 * np.sin(np.arange(16_000) / 7)).astype(np.float32)
    audio[800] = bad
    sf.write(str(path), audio, 16_000, subtype="FLOAT")
    return path


@pytest.fixture
def asr_world(work, whisper_tiny) -> Path:
    nan_wav(work / "nan.wav")
    (work / "m.jsonl").write_text(json.dumps({"id": "u1", "audio": "nan.wav", "text": "hello world"}) + "\n")
    (work / "pairs.jsonl").write_text(
        json.dumps({"id": "p1", "audio": "nan.wav", "chosen_text": "hello world", "rejected_text": "hello word"}) + "\n")
    (work / "asr.yaml").write_text(
        f"track: asr\nmodel: {{path: {whisper_tiny}, adapter: whisper}}\ndata: {{pairs: pairs.jsonl}}\n"
        "train: {out_dir: run, batch_size: 1, max_steps: 1}\nreference: {source: model}\n"
        "build_pairs: {manifest: m.jsonl, work_dir: work}\n")
    return work


def test_nan_wav_stops_training(asr_world, capsys):
    one_line(capsys, asr_world, ["train", "asr.yaml", "--quiet"],
             "error: pairs.jsonl:1: nan.wav: 1 non-finite samples (NaN or infinity; first at sample 800")
    assert not (asr_world / "run").exists()


def test_nan_wav_stops_build_pairs(asr_world, capsys):
    one_line(capsys, asr_world, ["build-pairs", "asr.yaml", "--quiet"], "error: m.jsonl: id u1: nan.wav: 1 non-finite")
    assert not (asr_world / "work" / "pairs.jsonl").exists()


# ------------------------------------------------------------------------------ model folders

def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _bad_config(d: Path) -> None:
    (d / "config.json").write_text('{"model_type": "llama", ')


def _truncated_weights(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


MODEL_CASES = {
    "no config.json": (_no_config, "no config.json in this folder"),
    "malformed config.json": (_bad_config, "is not a valid JSON file"),
    "truncated model.safetensors": (_truncated_weights, "damaged or truncated safetensors weights"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
@pytest.mark.parametrize("command", ["train", "ref-logps"])
def test_broken_model_folder(work, capsys, tiny_lm, case, command):
    shutil.copytree(tiny_lm, work / "model")
    mutate, message = MODEL_CASES[case]
    mutate(work / "model")
    make_pairs(work / "pairs.jsonl", n=8)
    (work / "r.yaml").write_text("model: {path: model}\ndata: {pairs: pairs.jsonl}\n"
                                 "train: {out_dir: run, max_steps: 1, batch_size: 2}\nreference: {source: model}\n")
    args = (["train", "r.yaml", "--quiet"] if command == "train"
            else ["ref-logps", "r.yaml", "--in", "pairs.jsonl", "--out", "out/ref.jsonl", "--quiet"])
    one_line(capsys, work, args, "error: model: cannot load model: ", message)


# ------------------------------------------------------------------- a model path that is a file

def no_hub(monkeypatch) -> None:
    """Online as far as the libraries can tell (no HF_HUB_OFFLINE), but any hub call fails the test: a
    local path that exists is never looked up on the hub (a relative `m` or `dir/m` file passes for a hub
    id, which transformers used to retry 11 times, 26 s, before its error)."""
    import transformers.utils.hub as tf_hub

    import lpo_speech.hub as hub

    def called(*a, **k):
        raise AssertionError(f"hub call for a local file: {a[:2]}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "missing", called)
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(tf_hub, name, called)


FILE_MODEL = "model: {path: m}\ndata: {pairs: pairs.jsonl}\ntrain: {out_dir: run, max_steps: 1}\n"
TTS_LM = TTS.replace("{path: m}", "{path: LM}")  # LM: a real model folder, so only the judge is a file
FILE_MODEL_CASES = {
    "train model.path": (FILE_MODEL, ["train", "r.yaml", "--quiet"],
                         "error: r.yaml: model.path: 'm' is a file; expected a model folder (save_pretrained)"),
    "train reference.path": (FILE_MODEL.replace("{path: m}", "{path: LM}") + "reference: {source: model, path: m}\n",
                             ["train", "r.yaml", "--quiet"], "error: r.yaml: reference.path: 'm' is a file"),
    "train --plan": (FILE_MODEL, ["train", "r.yaml", "--plan"],
                     "error: model.path: 'm' is a file; expected a model folder (save_pretrained); pass --plan-model"),
    "ref-logps": (FILE_MODEL, ["ref-logps", "r.yaml", "--in", "pairs.jsonl", "--out", "out/ref.jsonl", "--quiet"],
                  "error: m: cannot load model: a file, not a model folder"),
    "eval --model": (None, ["eval", "--wer", "--model", "m", "--data", "pairs.jsonl", "--out", "ev", "--quiet"],
                     "error: --model: 'm' is a file; expected a model folder"),
    "build-pairs transformers-whisper": (TTS_LM + "  judge: {type: transformers-whisper, path: m}\n",
                                         ["build-pairs", "r.yaml", "--quiet"],
                                         "error: r.yaml: build_pairs.judge.path: 'm' is a file"),
    "build-pairs faster-whisper": (TTS_LM + "  judge: {type: faster-whisper, model: m}\n",
                                   ["build-pairs", "r.yaml", "--quiet"],
                                   "error: r.yaml: build_pairs.judge.model: 'm' is a file"),
}


@pytest.mark.parametrize("case", list(FILE_MODEL_CASES))
def test_model_path_that_is_a_file_is_one_line_at_once(work, capsys, monkeypatch, tiny_lm, case):
    import time

    text, args, message = FILE_MODEL_CASES[case]
    no_hub(monkeypatch)
    (work / "m").write_bytes(b"\0" * 64)  # e.g. a weights file named instead of its folder
    make_pairs(work / "pairs.jsonl", n=4)
    if text is not None:
        (work / "r.yaml").write_text(text.replace("LM", str(tiny_lm)))
    start = time.perf_counter()
    one_line(capsys, work, args, message)
    assert time.perf_counter() - start < 10, "a local file must not wait for the hub"


def test_judges_refuse_a_model_file(work):
    from lpo_speech.errors import UserError
    from lpo_speech.judges.asr import make_asr_judge
    from lpo_speech.judges.emotion2vec import Emotion2vecScorer

    (work / "m").write_bytes(b"x")
    for spec in ({"type": "faster-whisper", "model": "m"}, {"type": "transformers-whisper", "path": "m"},
                 {"type": "funasr", "model": "m"}):
        with pytest.raises(UserError, match="^m: cannot load .*: a file, not a model folder$"):
            make_asr_judge(spec)
    with pytest.raises(UserError, match="^m: cannot load emotion2vec model: a file, not a model folder$"):
        Emotion2vecScorer("m")
    (work / "bundled").write_bytes(b"x")  # the word names the shipped model, whatever lies in the folder
    make_asr_judge({"type": "faster-whisper", "model": "bundled"})


# ------------------------------------------------------------------------------------- flags

FLAG_CASES = [
    (["ref-logps"], "the following arguments are required", "(see `lpo-speech ref-logps --help`)"),
    (["ref-logps", "r.yaml", "--in", "a", "--out", "b", "--batch-size", "0"], "error: --batch-size: expected an integer >= 1"),
    (["ref-logps", "r.yaml", "--in", "a", "--out", "b", "--batch-size", "x"], "error: --batch-size: expected an integer"),
    (["ref-logps", "r.yaml", "--in", "a", "--out", "b", "--max-margin", "nan"], "error: --max-margin: expected a finite"),
    (["train", "r.yaml", "--bogus"], "error: unrecognized arguments: --bogus (see `lpo-speech train --help`)"),
    (["trian"], "error: COMMAND: invalid choice: 'trian'", "(see `lpo-speech --help`)"),
    (["make-asr-data", "--out", "d", "--workers", "0"], "error: --workers: expected an integer >= 1"),
    (["make-asr-data", "--out", "afile"], "error: --out afile: exists and is not a folder"),
    (["make-tts-data", "--out", "afile"], "error: --out afile: exists and is not a folder"),
    (["make-tts-data", "--out", "afile/sub"], "error: --out afile/sub: afile is not a folder"),
    (["make-tts-data", "--out", "d", "--n-test", "-1"], "error: --n-test: expected an integer >= 0"),
]


@pytest.mark.parametrize("args, expected", [(c[0], c[1:]) for c in FLAG_CASES], ids=[" ".join(c[0])[:50] for c in FLAG_CASES])
def test_bad_flags(work, capsys, args, expected):
    (work / "afile").write_text("a file, not a folder\n")
    one_line(capsys, work, args, *expected)


def test_help_is_still_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        main(["ref-logps", "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: lpo-speech ref-logps")


# ---------------------------------------------------------------------- last-resort mapping

def test_library_error_with_a_file_name_is_one_line(work, capsys, monkeypatch):
    import lpo_speech.commands.merge as merge

    def run(args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "some/weights.bin")

    monkeypatch.setattr(merge, "run", run)
    one_line(capsys, work, ["merge", "--model", "a", "--out", "c"], "error: some/weights.bin: No such file or directory")


@pytest.mark.parametrize("exc", [ValueError("a bug"), OSError("no file name: a bug")])
def test_programming_errors_keep_their_traceback(work, monkeypatch, exc):
    import lpo_speech.commands.merge as merge

    def run(args):
        raise exc

    monkeypatch.setattr(merge, "run", run)
    with pytest.raises(type(exc)):
        main(["merge", "--model", "a", "--out", "c"])


# ------------------------------------------------------------------------------------ torchrun

def test_torchrun_summary_shows_the_one_line(tmp_path):
    """torchrun always prints its own traceback and failure summary after a child exits non-zero; the
    child hands its line over through TORCHELASTIC_ERROR_FILE, so the summary shows it too."""
    (tmp_path / "r.yaml").write_text(BASE)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m",
                           "lpo_speech.cli", "train", "r.yaml", "loss.beta=.inf"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = "error: r.yaml: loss.beta: must be a finite number, got inf"
    assert proc.returncode != 0
    assert line + "\n" in proc.stderr
    assert f"traceback : {line}" in proc.stderr, proc.stderr[-3000:]
    assert snapshot(tmp_path) == {"r.yaml"}
