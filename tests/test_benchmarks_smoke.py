"""The benchmark runner end to end at a tiny size (the real run is slow and not part of the suite).

Each runner child is a fresh Python importing torch and transformers (about 20 s of CPU for the
three children here; over a minute on a loaded 2-core machine), so both tests carry the `slow`
marker (`-m "not slow"` leaves them out)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

RUNNER = REPO / "benchmarks" / "run_all.py"
TINY = ["--preset", "tiny", "--warmup", "1", "--steps", "1", "--n-candidates", "2", "--sample-prompts", "2",
        "--new-tokens", "3"]


def _run(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "res.json"
    proc = subprocess.run([sys.executable, str(RUNNER), *TINY, "--work", str(tmp_path / "work"), "--out", str(out),
                           *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_runner_lpo_and_sampling(tmp_path):
    res, stdout = _run(tmp_path, "--trainers", "lpo-sigmoid")
    r = res["results"]["lpo-sigmoid"]
    assert len(r["step_seconds"]) == 2 and r["pairs_per_s"] > 0 and r["peak_mb"] > 0
    s = res["results"]["sampling"]
    assert s["batched"]["candidates"] == s["one_at_a_time"]["candidates"] == 4 and s["speedup"] > 0
    assert "| lpo-sigmoid | sigmoid |" in stdout and "| speedup |" in stdout
    assert res["config"]["vocab"] == 512 and "cores" in res["machine"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trl") is None,
                    reason="TRL is a benchmark-only extra, not installed here (pip install trl==1.16.0)")
def test_runner_trl(tmp_path):
    res, _ = _run(tmp_path, "--trainers", "trl,lpo-sigmoid", "--no-sampling")
    assert res["results"]["trl"]["pairs_per_s"] > 0
    assert res["ratios"]["speed_lpo_over_trl"] > 0 and res["ratios"]["memory_lpo_over_trl"] > 0
