"""`lpo-speech demo`: the offline end-to-end job that `make demo` runs.

It is nothing but the documented commands, run in order and printed as they run, so every number it
reports can be reproduced by hand. Stages whose output exists are skipped: a rerun after an
interruption resumes. Everything lands under `--out` (default runs/demo); `summary.json` names the
models and every number, `summary.md` shows them as tables. Each track is scored in domain (held-out
sentences of its training generator and voices) and out of domain (natural sentences it never saw, and
for ASR voices and channels it never heard), and its summary line says whether this run shows the gain
the project's full-size study measured, or that it does not at demo size.

asr      synthetic speech (espeak-ng voices, perturbed piper, a quarter natural sentences) -> Whisper
         tiny.en imported from the CTranslate2 copy shipped in a pip package -> SFT on the training
         references -> pairs from the SFT model's own greedy and sampled transcripts plus perturbations
         -> LPO + the chosen NLL from the SFT model, and SFT continued on the same pairs' chosen side
         (the honest baseline) -> WER of base, SFT, SFT continued and LPO.
tts      the committed phoneme-synchronous SFT codec LM whose SFT data held natural sentences -> a
         demo-sized copy of its world (the same held-out sentences) -> its own greedy output and samples
         judged by Whisper tiny.en, the best as chosen (recipes/tts/tiny-sync-onpolicy.yaml) -> LPO + the
         chosen NLL -> judge WER, failure rate and similarity of SFT and LPO.
emotion  the phoneme-synchronous SFT model that saw few styled utterances -> a demo-sized copy of its
         world -> candidates ranked by the style classifier and CER (recipes/tts/emotion-offline-sync.yaml)
         -> LPO -> style accuracy, WER and failure rate of SFT and LPO on styled prompts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lpo_speech.errors import UserError
from lpo_speech.records import write_jsonl_atomic
from lpo_speech.steps import run_command, train_command

REPO = Path(__file__).resolve().parents[1]
ASR_RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"
TTS_RECIPE = REPO / "recipes" / "tts" / "tiny-sync-onpolicy.yaml"
EMOTION_RECIPE = REPO / "recipes" / "tts" / "emotion-offline-sync.yaml"
TTS_SFT = REPO / "assets" / "tts-tiny-sft-sync-natural"  # speaks natural sentences too: out of domain means something
EMOTION_SFT = REPO / "assets" / "tts-tiny-sft-sync-rare-styles"  # the sync world, scarce styled speech
STYLE_CLASSIFIER = REPO / "assets" / "style-classifier.json"
TRACKS = ("asr", "tts", "emotion")
SETS = ("in-domain", "out-of-domain")
# What each track's full-size study measured, which the demo's own run is read against: the metric,
# the row LPO is compared with, whether lower is better, the study's page, and per set whether LPO beat
# that row there (None: the study did not measure that set).
CLAIMS = {"asr": ("wer", "sft-continued", True, "results/asr-whisper/README.md",
                  {"in-domain": False, "out-of-domain": False}),
          "tts": ("wer", "sft", True, "results/tts-online/README.md", {"in-domain": False, "out-of-domain": False}),
          "emotion": ("emotion_acc", "sft", False, "results/emotion-sync-soup/README.md",
                      {"in-domain": True, "out-of-domain": None})}


def _first(src: Path, n: int) -> Path:
    """The first `n` lines of a manifest, as a manifest of its own beside it (so the relative paths in
    it, a prompt's reference voice, still resolve)."""
    dst = src.with_name(f"{src.stem}_first{n}.jsonl")
    if not dst.exists():
        rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()][:n]
        write_jsonl_atomic(dst, rows)
    return dst


def _eval(stage: Path, models: dict[str, Path], sets: dict[str, Path], extra: list[str]) -> dict:
    """`eval --wer` of the models on both sets (OUT/<set>/...); returns {set: {label: metrics}}."""
    args = ["eval", "--wer"]
    for label, model in models.items():
        args += ["--model", str(model), "--label", label]
    for name, data in sets.items():
        args += ["--data", f"{name}={data}"]
    run_command([*args, "--out", str(stage / "eval"), *extra], done=stage / "eval" / "table.md")
    return json.loads((stage / "eval" / "metrics.json").read_text())


def asr_stage(out: Path, *, n_train: int, n_pairs: int, n_test: int) -> dict:
    asr = out / "asr"
    data, lpo_data = asr / "data", asr / "lpo-data"
    run_command(["make-asr-data", "--out", str(data), "--n-train", str(n_train), "--n-test", str(n_test),
                 "--natural-share", "0.25"], done=data / "test.jsonl")
    run_command(["make-asr-data", "--out", str(data), "--ood", "--n-ood-dev", "0", "--n-ood-test", str(n_test)],
                done=data / "ood_test.jsonl")
    # --overwrite: the step runs only while the import is not done (a folder left by an older, non-atomic import)
    run_command(["import-whisper-ct2", "bundled", str(asr / "base"), "--overwrite"],
                done=asr / "base" / "model.safetensors")
    run_command(["sft-pairs", str(data / "train.jsonl"), str(data / "train_sft.jsonl")], done=data / "train_sft.jsonl")
    sft = [f"model.path={asr / 'base'}", f"data.pairs={data / 'train_sft.jsonl'}", "loss.type=sft",
           "loss.sft_weight=1.0", "loss.gamma=0.0", f"train.out_dir={asr / 'sft'}"]
    train_command(ASR_RECIPE, sft, asr / "sft")
    run_command(["make-asr-data", "--out", str(lpo_data), "--n-train", str(n_pairs), "--n-test", "0", "--seed", "1",
                 "--natural-share", "0.25"], done=lpo_data / "train.jsonl")
    paths = [f"model.path={asr / 'sft' / 'model'}", f"build_pairs.manifest={lpo_data / 'train.jsonl'}",
             f"build_pairs.work_dir={asr / 'pairs'}", f"data.pairs={asr / 'pairs' / 'pairs.jsonl'}",
             f"train.out_dir={asr / 'lpo'}", "build_pairs.greedy=true", "build_pairs.samples=2",
             "build_pairs.perturbations=2", "build_pairs.max_pairs_per_utterance=2", "loss.sft_weight=0.2"]
    run_command(["build-pairs", str(ASR_RECIPE), *paths], done=asr / "pairs" / "pairs.jsonl")
    train_command(ASR_RECIPE, paths, asr / "lpo")
    # The honest baseline when the chosen side is gold: the same pairs' chosen transcripts, plain NLL.
    cont = [*paths[:-1], "loss.type=sft", "loss.sft_weight=1.0", "loss.gamma=0.0", f"train.out_dir={asr / 'sft-continued'}"]
    train_command(ASR_RECIPE, cont, asr / "sft-continued")
    models = {"base": asr / "base", "sft": asr / "sft" / "model", "sft-continued": asr / "sft-continued" / "model",
              "lpo": asr / "lpo" / "model"}
    m = _eval(asr, models, {"in-domain": data / "test.jsonl", "out-of-domain": data / "ood_test.jsonl"}, [])
    pairs = json.loads((asr / "pairs" / "summary.json").read_text())
    return {"models": {k: str(v) for k, v in models.items()}, "pairs": pairs["pairs_written"], "metrics": m,
            "curves": str(asr / "lpo" / "training_curves.png")}


def tts_world(out: Path, *, n_prompts: int, n_test: int, sft: Path = TTS_SFT, track: str = "tts") -> Path:
    """A demo-sized copy of the SFT model's world (its sizes and seed, from sft/world.json) in
    `<out>/<track>/data`: the held-out prompts are exactly the sentences the SFT model never saw."""
    data = out / track / "data"
    world = json.loads((sft / "world.json").read_text())
    args = ["make-tts-data", "--out", str(data), "--n-train", str(world["n_train"]), "--n-dev", str(world["n_dev"]),
            "--n-test", str(world["n_test"]), "--seed", str(world["seed"]), "--style-share", str(world["style_share"]),
            "--limit", f"train={n_prompts}", "--limit", "dev=0", "--limit", f"test={n_test}",
            "--limit", f"test_style={n_test}", "--no-ceiling",
            *(["--natural-share", str(world["natural_share"])] if world.get("natural_share") else []),
            *(["--phoneme-sync"] if world.get("phoneme_sync") else [])]
    run_command(args, done=data / "test_style_prompts.jsonl")
    return data


def _align(stage: Path, recipe: Path, sft: Path, paths: list[str], sets: dict[str, Path], eval_extra: list[str]) -> tuple:
    """build-pairs -> train -> eval (SFT vs LPO on both sets) for a TTS recipe; (metrics, pair summary)."""
    paths = [f"model.path={sft}", f"build_pairs.work_dir={stage / 'pairs'}",
             f"data.pairs={stage / 'pairs' / 'pairs_ref.jsonl'}", f"train.out_dir={stage / 'lpo'}", *paths]
    run_command(["build-pairs", str(recipe), *paths], done=stage / "pairs" / "pairs_ref.jsonl")
    train_command(recipe, paths, stage / "lpo")
    # One sampling thread, as the recipes' runtime.sampling_threads: the tiny models sample fastest so.
    m = _eval(stage, {"sft": sft, "lpo": stage / "lpo" / "model"}, sets,
              ["--sampling-threads", "1", "--batch-size", "32", "--no-dnsmos", *eval_extra])
    return m, json.loads((stage / "pairs" / "summary.json").read_text())


def tts_stage(out: Path, data: Path, *, n_prompts: int, n_test: int, sft: Path = TTS_SFT, recipe: Path = TTS_RECIPE) -> dict:
    tts = out / "tts"
    sets = {"in-domain": _first(data / "test_prompts.jsonl", n_test),
            "out-of-domain": _first(data / "ood_test_prompts.jsonl", n_test)}
    m, pairs = _align(tts, recipe, sft, [f"build_pairs.prompts={data / 'train_prompts.jsonl'}",
                                         f"build_pairs.gold={data / 'train.jsonl'}", f"build_pairs.limit={n_prompts}"],
                      sets, [])
    return {"models": {"sft": str(sft), "lpo": str(tts / "lpo" / "model")}, "pairs": pairs["pairs_written"],
            "metrics": m, "curves": str(tts / "lpo" / "training_curves.png")}


def emotion_stage(out: Path, data: Path, *, n_prompts: int, n_test: int, sft: Path = EMOTION_SFT,
                  recipe: Path = EMOTION_RECIPE, classifier: Path = STYLE_CLASSIFIER) -> dict:
    emo = out / "emotion"
    sets = {"in-domain": _first(data / "test_style_prompts.jsonl", n_test),
            "out-of-domain": _first(data / "ood_test_style_prompts.jsonl", n_test)}
    m, pairs = _align(emo, recipe, sft, [f"build_pairs.prompts={data / 'style_prompts.jsonl'}",
                                         f"build_pairs.limit={n_prompts}", f"build_pairs.emotion.path={classifier}"],
                      sets, ["--emotion-scorer", f"prosody:{classifier}"])
    return {"models": {"sft": str(sft), "lpo": str(emo / "lpo" / "model")}, "pairs": pairs["pairs_written"],
            "metrics": m, "curves": str(emo / "lpo" / "training_curves.png")}


def verdict(track: str, metrics: dict) -> dict:
    """Set by set, whether LPO beat the row the track's full-size study compares it with (CLAIMS), and
    whether that is what the study found."""
    key, base, lower, page, expected = CLAIMS[track]
    out = {}
    for name in SETS:
        a, b = metrics[name]["lpo"].get(key), metrics[name][base].get(key)
        if a is None or b is None:
            continue
        better = (a < b) if lower else (a > b)
        out[name] = {"lpo": a, base: b, "ratio": a / b if b else float("nan"), "lpo_better": better,
                     "study_found_better": expected.get(name), "as_the_study": expected.get(name) in (None, better)}
    return {"metric": key, "compared_with": base, "page": page, "sets": out}


def _lines(track: str, v: dict) -> list[str]:
    key, base = v["metric"], v["compared_with"]
    said, differs = [], []
    for name, s in v["sets"].items():
        better = "better" if s["lpo_better"] else "not better"
        said.append(f"{name}: LPO {key} {s['lpo']:.4f} vs {base} {s[base]:.4f} (x{s['ratio']:.3f}, {better})")
        if not s["as_the_study"]:
            differs.append(name)
    found = [f"{name}: {'better' if s['study_found_better'] else 'not better'}" for name, s in v["sets"].items()
             if s["study_found_better"] is not None]
    lines = ["; ".join(said) + "."]
    if found:
        lines.append(f"The full-size study ({v['page']}) found LPO against {base} " + ", ".join(found) + "; "
                     + (f"at demo size this run points another way on {', '.join(differs)}." if differs
                        else "this run points the same way."))
    return lines


def run_track(out: Path, track: str, sizes: dict) -> dict:
    """One track end to end; its part of the summary, also kept as `<out>/<track>/summary.json`."""
    if track == "asr":
        part = asr_stage(out, n_train=sizes["n_train"], n_pairs=sizes["n_pairs"], n_test=sizes["n_test"])
    else:  # the emotion track's SFT model is the sync model that saw few styled utterances: its own world
        sft = TTS_SFT if track == "tts" else EMOTION_SFT
        n_prompts = sizes["n_tts_prompts"] if track == "tts" else sizes["n_emotion_prompts"]
        data = tts_world(out, n_prompts=n_prompts, n_test=sizes["n_tts_test"], sft=sft, track=track)
        stage = tts_stage if track == "tts" else emotion_stage
        part = stage(out, data, n_prompts=n_prompts, n_test=sizes["n_tts_test"])
    part["verdict"] = verdict(track, part["metrics"])
    (out / track / "summary.json").write_text(json.dumps(part, indent=2))
    return part


def lanes(tracks: tuple[str, ...], jobs: int) -> list[tuple[str, ...]]:
    """Which tracks run side by side: `jobs` processes, the tracks dealt out in order. Most of a TTS
    track is the tiny codec LM sampling on one thread and a judge on one thread, so on 2 cores three
    one-thread processes finish sooner than one two-thread process running the tracks in turn."""
    jobs = max(1, min(jobs, len(tracks)))
    return [tuple(tracks[i::jobs]) for i in range(jobs)]


def _run_lanes(out: Path, groups: list[tuple[str, ...]], sizes: dict) -> None:
    """Each lane as its own `lpo-speech demo --part` process (one torch thread each), its output kept in
    `<out>/<lane>.log`; the steps it starts and finishes are echoed here, prefixed with the lane."""
    import os
    import subprocess
    import sys
    import threading

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs, echo = [], threading.Lock()  # one lane's line at a time on the console
    for lane in groups:
        name = ",".join(lane)
        args = [sys.executable, "-m", "lpo_speech.cli", "demo", "--out", str(out), "--tracks", name, "--jobs", "1",
                "--part", *[f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()]]
        log = out / f"{name.replace(',', '+')}.log"
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        print(f"[{name}] running; its log: {log}", flush=True)

        def pump(proc=proc, log=log, name=name) -> None:
            with log.open("a", encoding="utf-8") as f:
                for line in proc.stdout:
                    f.write(line)
                    f.flush()
                    if line.startswith("== ") or line.startswith("error:"):
                        with echo:
                            print(f"[{name}] {line.rstrip()}", flush=True)

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        procs.append((name, proc, thread, log))
    failed = []
    for name, proc, thread, log in procs:
        proc.wait()
        thread.join()
        if proc.returncode != 0:
            failed.append(f"{name} (exit {proc.returncode}; its log: {log})")
    if failed:
        raise UserError(f"demo: {'; '.join(failed)}")


def run_demo(out: str | Path, *, tracks: tuple[str, ...] = TRACKS, jobs: int = 3, part: bool = False,
             n_train: int = 300, n_pairs: int = 150, n_test: int = 60, n_tts_prompts: int = 96,
             n_emotion_prompts: int = 72, n_tts_test: int = 40) -> dict:
    """Every track (`jobs` processes side by side, one torch thread each; 1: one after another in this
    process), then the summary; `part`: run the tracks asked for and leave the summary to the process
    that started this one."""
    unknown = [t for t in tracks if t not in TRACKS]
    if unknown:
        raise UserError(f"--tracks: unknown {unknown} (known: {', '.join(TRACKS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # The emotion track samples and scores 5 styled candidates per prompt: its longest stage, so it gets
    # fewer prompts than the TTS track and the three lanes end together (on 2 cores, under 30 minutes).
    sizes = dict(n_train=n_train, n_pairs=n_pairs, n_test=n_test, n_tts_prompts=n_tts_prompts,
                 n_emotion_prompts=n_emotion_prompts, n_tts_test=n_tts_test)
    t0 = time.perf_counter()
    groups = lanes(tracks, 1 if part else jobs)
    if len(groups) == 1:
        summary = {track: run_track(out, track, sizes) for track in groups[0]}
    else:
        _run_lanes(out, groups, sizes)
        summary = {t: json.loads((out / t / "summary.json").read_text()) for t in tracks}
    if part:
        return summary
    summary = {t: summary[t] for t in TRACKS if t in summary}
    summary["seconds"] = round(time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    titles = {"asr": "ASR: Whisper tiny.en, SFT, then LPO + NLL on the SFT model's own transcripts (or SFT continued)",
              "tts": "TTS: phoneme-synchronous tiny codec LM, LPO + NLL on its own judged samples",
              "emotion": "Emotion (offline: speaking styles): LPO on pareto pairs over style and CER"}
    md = ["# lpo-speech demo", ""]
    for track in TRACKS:
        if track not in summary:
            continue
        t = summary[track]
        table = (out / track / "eval" / "table.md").read_text().split("\n\n")[0]
        md += [f"## {titles[track]}", "", f"{t['pairs']} training pairs; curves: `{t['curves']}`.", "", table.strip(), "",
               *_lines(track, t["verdict"]), ""]
    md.append(f"Per-set tables: `{out}/<track>/eval/table.md`. Took {summary['seconds']} s.")
    (out / "summary.md").write_text("\n".join(md) + "\n")
    print("\n" + "\n".join(md))
    print(f"summary: {out / 'summary.json'}")
    return summary
