"""Host memory of the ASR stages against data set size: peak RSS of `build-pairs` and `train` at
several manifest sizes, side by side in one run.

    .venv/bin/python benchmarks/asr_memory.py                          # -> benchmarks/results/asr_memory-cpu.json
    .venv/bin/python benchmarks/asr_memory.py --versions HEAD,dfd679a  # committed code, side by side

A manifest of N utterances is made offline: `--sentences` natural training sentences spoken by
espeak-ng at 16 kHz, each file copied to N distinct paths (the memory of a stage follows the number
of files it reads, not whether two hold the same samples). Then, for each N, the real commands run as
child processes, exactly as a user runs them: `lpo-speech build-pairs` and `lpo-speech train` with
recipes/asr/whisper-tiny-offline.yaml (Whisper tiny.en imported from the bundled CTranslate2 copy,
perturbed transcripts, frozen encoder, live reference) for `--steps` training steps. Each command's
peak RSS is its own high-water mark (`os.wait4`'s ru_maxrss for that child alone). `--versions` names
the code each run uses: `checkout` (this working tree) or git commits (the package and recipes as of
that commit, `git archive`d into the working folder and put on PYTHONPATH), all on the same data.
Reported per code version and N: peak MB and seconds of each command, the bytes of the feature store,
and the ratio of the largest N to the smallest.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECIPE = "recipes/asr/whisper-tiny-offline.yaml"


def make_manifest(root: Path, sentences: list[str], n: int, voices: Path) -> Path:
    """`root/train.jsonl` of n utterances: the spoken sentences (in `voices`) copied round robin."""
    wavs = root / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    with (root / "train.jsonl").open("w") as f:
        for i in range(n):
            k = i % len(sentences)
            name = f"wavs/utt-{i:06d}.wav"
            shutil.copyfile(voices / f"{k:03d}.wav", root / name)
            f.write(json.dumps({"id": f"utt-{i:06d}", "audio": name, "text": sentences[k]}) + "\n")
    return root / "train.jsonl"


def speak(sentences: list[str], out: Path) -> None:
    import numpy as np
    import soundfile as sf
    import soxr

    out.mkdir(parents=True, exist_ok=True)
    for k, text in enumerate(sentences):
        raw = out / f"{k:03d}.raw.wav"
        subprocess.run(["espeak-ng", "-p", str(40 + 5 * (k % 5)), "-w", str(raw), text], check=True)
        audio, sr = sf.read(str(raw), dtype="float32")
        raw.unlink()
        sf.write(str(out / f"{k:03d}.wav"), soxr.resample(audio, sr, 16_000).astype(np.float32), 16_000)


def run(args: list[str], cwd: Path, pythonpath: Path, log: Path) -> dict:
    """One command as a child process: its own peak RSS (MB) and wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lpo_speech.cli", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({proc.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    return {"peak_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1)}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def measure(code: Path, model: Path, data: Path, work: Path, steps: int) -> dict:
    """build-pairs then train with the package in `code` on the manifest in `data`."""
    work.mkdir(parents=True)
    ov = [f"model.path={model}", f"build_pairs.manifest={data / 'train.jsonl'}",
          f"build_pairs.work_dir={work / 'pairs'}", f"data.pairs={work / 'pairs' / 'pairs_ref.jsonl'}",
          f"train.out_dir={work / 'lpo'}", f"train.max_steps={steps}", "train.warmup_steps=0",
          "train.log_every=1", "runtime.device=cpu", "runtime.threads=1", "--quiet"]
    recipe = str(code / RECIPE)
    out = {"build-pairs": run(["build-pairs", recipe, *ov], work, code, work / "build-pairs.log"),
           "train": run(["train", recipe, *ov], work, code, work / "train.log")}
    out["pairs"] = len((work / "pairs" / "pairs_ref.jsonl").read_text().splitlines())
    out["feature_store_mb"] = round(folder_bytes(work / "pairs" / "features") / 2**20, 1)
    out["peak_mb"] = max(out["build-pairs"]["peak_mb"], out["train"]["peak_mb"])
    return out


def checkout(commit: str, dest: Path) -> Path:
    """The package and recipes as of `commit`, unpacked into `dest`."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", commit, "lpo_speech", "recipes"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def ratios(results: dict, small: int, large: int) -> dict:
    a, b = results[str(small)], results[str(large)]
    return {cmd: round(b[cmd]["peak_mb"] / a[cmd]["peak_mb"], 3) for cmd in ("build-pairs", "train")} | {
        "peak": round(b["peak_mb"] / a["peak_mb"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200,2000", help="manifest sizes, comma separated")
    ap.add_argument("--sentences", type=int, default=40, help="distinct spoken sentences")
    ap.add_argument("--steps", type=int, default=3, help="training steps (8 pairs each)")
    ap.add_argument("--versions", default="checkout", help="code to measure, comma separated: checkout or commits")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--out", default=str(HERE / "results" / "asr_memory-cpu.json"))
    a = ap.parse_args()
    sizes = sorted(int(s) for s in a.sizes.split(","))

    import torch
    import transformers

    from lpo_speech.synthetic.natural import pool

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="asr-memory-"))
    try:
        sentences = pool("train")[:a.sentences]
        speak(sentences, work / "voices")
        model = work / "tiny-en"
        run(["import-whisper-ct2", "bundled", str(model), "--overwrite"], work, REPO, work / "import.log")  # --work reused
        data = {n: make_manifest(work / f"data-{n}", sentences, n, work / "voices").parent for n in sizes}
        versions = {}
        for v in a.versions.split(","):
            if v == "checkout":
                versions["checkout"] = REPO
            else:
                rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", v], check=True,
                                     capture_output=True, text=True).stdout.strip()
                versions[f"commit {rev}"] = checkout(rev, work / f"code-{rev}")
        results: dict = {}
        for name, code in versions.items():
            results[name] = {}
            for n in sizes:
                print(f"{name}: {n} utterances ...", flush=True)
                results[name][str(n)] = r = measure(code, model, data[n], work / f"run-{name.split()[-1]}-{n}",
                                                    a.steps)
                print(f"  build-pairs {r['build-pairs']['peak_mb']:,.0f} MB ({r['build-pairs']['seconds']:.0f} s), "
                      f"train {r['train']['peak_mb']:,.0f} MB ({r['train']['seconds']:.0f} s), "
                      f"features on disk {r['feature_store_mb']} MB", flush=True)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    out = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
           "torch": torch.__version__, "transformers": transformers.__version__,
           "recipe": RECIPE, "sizes": sizes, "sentences": a.sentences, "train_steps": a.steps,
           "results": results,
           "ratio_largest_over_smallest": {k: ratios(v, sizes[0], sizes[-1]) for k, v in results.items()}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["ratio_largest_over_smallest"], indent=2))


if __name__ == "__main__":
    main()
