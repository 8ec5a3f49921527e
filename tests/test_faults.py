"""Faults a run survives (docs/faults.md): a resume with changed settings, two runs on one folder, a
checkpoint write that fails (a real write limit: RLIMIT_FSIZE, the kernel's "File too large"), a
damaged latest checkpoint, an empty pair file, and, under torchrun, a failure or a SIGKILL in one
process. All on the tiny real Llama of the toy world."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def cut_after(run: Path, step: int) -> None:
    """What a kill just after checkpoint `step` leaves: later checkpoints and the model gone."""
    for ckpt in (run / "checkpoints").glob("step-??????"):
        if int(ckpt.name.split("-")[1]) > step:
            shutil.rmtree(ckpt)
    shutil.rmtree(run / "model", ignore_errors=True)


COMMON = ["train.max_steps=8", "train.save_every=2", "train.keep_checkpoints=5", "--quiet"]


def test_resume_refuses_changed_inputs_and_records_allowed_changes(toy_world, lpo):
    lpo("train", "recipe.yaml", "train.max_steps=4", "train.save_every=2", "--quiet", cwd=toy_world)
    run = toy_world / "run"
    config = (run / "config.yaml").read_text()
    rows = (toy_world / "pairs.jsonl").read_text().splitlines()
    (toy_world / "other.jsonl").write_text("\n".join([rows[1], rows[0], *rows[2:]]) + "\n")  # same rows, reordered
    for override, named in [("data.pairs=other.jsonl", "data.pairs"), ("loss.average_logps=false", "loss.average_logps"),
                            ("train.lr=1e-2", "train.lr")]:
        line = one_line(lpo("train", "recipe.yaml", "train.max_steps=4", override, "--resume", cwd=toy_world,
                            check=False))
        assert "--resume with other settings" in line and named in line and "train.max_steps" in line, line
    assert (run / "config.yaml").read_text() == config  # the run still says what made its checkpoints
    # the same content under another path is the same input
    shutil.copy(toy_world / "pairs.jsonl", toy_world / "copy.jsonl")
    out = lpo("train", "recipe.yaml", "data.pairs=copy.jsonl", "train.max_steps=6", "train.save_every=2", "--resume",
              "--quiet", cwd=toy_world)
    assert "train.max_steps 4 -> 6" in out.stdout
    record = [json.loads(l) for l in (run / "resumes.jsonl").read_text().splitlines()]
    assert record[-1]["step"] == 4 and record[-1]["changed"]["train.max_steps"] == [4, 6]
    assert (run / "config.yaml").read_text() == config and [r["step"] for r in metrics(run)] == list(range(1, 7))


def test_a_run_in_use_is_refused_and_a_killed_one_frees_its_folder(toy_world, lpo):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "lpo_speech.cli", "train", "recipe.yaml", "train.max_steps=100000",
                              "train.save_every=2", "--quiet"], cwd=toy_world, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not list((toy_world / "run/checkpoints").glob("step-??????")) and time.time() < deadline:
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        line = one_line(lpo("train", "recipe.yaml", "train.max_steps=100000", "train.save_every=2", "--resume",
                            cwd=toy_world, check=False))
        assert "in use by a run that is still going" in line and f"pid {first.pid}" in line, line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel dropped the dead run's lock: the run resumes (to a short end)
    out = lpo("train", "recipe.yaml", "train.max_steps=100000", "train.save_every=2", "--resume", "--quiet",
              "train.max_steps=6", cwd=toy_world)
    assert out.returncode == 0 and (toy_world / "run/model/config.json").is_file()


def test_a_failed_checkpoint_write_keeps_the_previous_one(toy_world, lpo):
    lpo("train", "recipe.yaml", *COMMON, cwd=toy_world)
    whole = metrics(toy_world / "run")
    shutil.copytree(toy_world / "run", toy_world / "run_k")
    cut_after(toy_world / "run_k", 4)
    ckpt = toy_world / "run_k/checkpoints/step-000004"
    limit = (ckpt / "model.safetensors").stat().st_size + 1024  # the optimizer state (2x the weights) cannot fit

    def small_files():  # a real write limit: the kernel refuses to grow a file past it
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "lpo_speech.cli", "train", "recipe.yaml", *COMMON,
                           "train.out_dir=run_k", "--resume"], cwd=toy_world, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=small_files, timeout=600)
    line = one_line(proc)
    assert "could not write checkpoint step-000006" in line and "step-000004 is intact" in line, line
    assert sorted(p.name for p in (toy_world / "run_k/checkpoints").iterdir()) == ["step-000002", "step-000004"]
    lpo("train", "recipe.yaml", *COMMON, "train.out_dir=run_k", "--resume", cwd=toy_world)
    assert [r["loss"] for r in metrics(toy_world / "run_k")] == pytest.approx([r["loss"] for r in whole], rel=1e-6)


def test_a_damaged_latest_checkpoint_is_passed_over_and_said_so(toy_world, lpo):
    lpo("train", "recipe.yaml", *COMMON, cwd=toy_world)
    whole = metrics(toy_world / "run")
    for name, damage, said in [("run_t", "truncate", "optimizer.safetensors"), ("run_g", "garble", "unreadable")]:
        run = toy_world / name
        shutil.copytree(toy_world / "run", run)
        cut_after(run, 6)
        f = run / "checkpoints/step-000006/optimizer.safetensors"
        data = f.read_bytes()
        # truncated (sizes disagree with state.json), or the same size with a garbled header
        f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 64 + data[64:])
        out = lpo("train", "recipe.yaml", *COMMON, f"train.out_dir={name}", "--resume", cwd=toy_world)
        said_line = [l for l in out.stdout.splitlines() if l.startswith("resume:")]
        assert len(said_line) == 1 and "step-000006 is damaged" in said_line[0] and said in said_line[0], out.stdout
        assert "resuming from step-000004" in said_line[0]
        assert [r["loss"] for r in metrics(run)] == pytest.approx([r["loss"] for r in whole], rel=1e-6)


def test_a_run_that_fails_before_any_step_leaves_nothing(toy_world, lpo):
    (toy_world / "empty.jsonl").write_text("")
    line = one_line(lpo("train", "recipe.yaml", "data.pairs=empty.jsonl", "--quiet", cwd=toy_world, check=False))
    assert "empty.jsonl" in line and "fewer than one global batch" in line
    assert not (toy_world / "run").exists()
    (toy_world / "mine").mkdir()
    (toy_world / "mine/notes.txt").write_text("kept")
    one_line(lpo("train", "recipe.yaml", "data.pairs=empty.jsonl", "train.out_dir=mine", "--quiet", cwd=toy_world,
                 check=False))
    assert sorted(p.name for p in (toy_world / "mine").iterdir()) == ["notes.txt"]  # what was there stays


# ------------------------------------------------------------------------------------ torchrun

def torchrun(cwd: Path, *args: str, port: int, nproc: int = 2, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
           "-m", "lpo_speech.cli", *args]
    if kw.get("popen"):
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_failure_in_one_process_is_one_line_from_rank_0(toy_world):
    rows = [json.loads(l) for l in (toy_world / "pairs.jsonl").read_text().splitlines()]
    rows[1]["chosen_tokens"] = [999]  # line 2: rank 1's share (every 2nd pair), outside the vocabulary
    (toy_world / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.time()
    proc = torchrun(toy_world, "ref-logps", "recipe.yaml", "--in", "bad.jsonl", "--out", "bad_ref.jsonl", "--quiet",
                    port=29561)
    assert proc.returncode != 0 and time.time() - t0 < 120
    ours = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert ours == ["error: rank 1: bad.jsonl:2: field 'chosen_tokens': token id 999 outside the model's "
                    "vocabulary [0, 64)"], proc.stderr[-3000:]
    assert not (toy_world / "bad_ref.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_rank_killed_mid_run_resumes_to_the_uninterrupted_losses(toy_world, strategy):
    common = ["train.max_steps=12", "train.save_every=2", "train.keep_checkpoints=10", "train.batch_size=2",
              f"train.strategy={strategy}", "--quiet"]
    whole = torchrun(toy_world, "train", "recipe.yaml", *common, "train.out_dir=run_w", port=29571)
    assert whole.returncode == 0, whole.stderr[-3000:]
    launcher = torchrun(toy_world, "train", "recipe.yaml", *common, "train.out_dir=run_k", port=29572, popen=True)
    ranks = {}
    deadline = time.time() + 300
    while not (toy_world / "run_k/checkpoints/step-000004").is_dir() and time.time() < deadline:
        time.sleep(0.02)
    for child in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        ranks[int(next(e for e in environ if e.startswith(b"RANK="))[5:])] = int(child)
    os.kill(ranks[1], signal.SIGKILL)  # by its process id, mid-run (steps 5-12 are left)
    t0 = time.time()
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and time.time() - t0 < 60  # the other rank did not hang
    assert not (toy_world / "run_k/model").exists()
    resumed = torchrun(toy_world, "train", "recipe.yaml", *common, "train.out_dir=run_k", "--resume", port=29573)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = metrics(toy_world / "run_w"), metrics(toy_world / "run_k")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5, abs=1e-6)
