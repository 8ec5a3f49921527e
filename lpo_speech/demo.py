"""`lpo-speech demo`: the offline end-to-end job that `make demo` runs.

It is nothing but the documented commands, run in order and printed as they run, so every number it
reports can be reproduced by hand. Stages whose output exists are skipped: a rerun after an
interruption resumes. Everything lands under `--out` (default runs/demo); `summary.json` names the
models and the before/after numbers, `summary.md` shows them as tables.

asr      synthetic speech (espeak-ng voices, perturbed piper) -> Whisper tiny.en imported from the
         CTranslate2 copy shipped in a pip package -> perturbation-based pairs with reference log-probs
         -> LPO -> WER of the base and the LPO model on held-out speech.
tts      the committed SFT codec LM (assets/tts-tiny-sft) -> a demo-sized copy of its world (the same
         held-out sentences) -> sampled candidates judged by Whisper tiny.en, gold as chosen -> LPO ->
         WER, failure rate, similarity and DNSMOS of SFT and LPO on held-out prompts.
emotion  the phoneme-synchronous SFT model that saw few styled utterances
         (assets/tts-tiny-sft-sync-rare-styles; it speaks, where the plain models mostly fail) -> a
         demo-sized copy of its own world -> candidates ranked by the style classifier
         (assets/style-classifier.json) and CER (recipes/tts/emotion-offline-sync.yaml: pareto pairs,
         the chosen held to CER 0.3 and stability) -> LPO -> style accuracy, WER and failure rate of SFT
         and LPO on held-out styled prompts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lpo_speech.errors import UserError
from lpo_speech.steps import run_command, train_command

REPO = Path(__file__).resolve().parents[1]
ASR_RECIPE = REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"
TTS_RECIPE = REPO / "recipes" / "tts" / "tiny.yaml"
EMOTION_RECIPE = REPO / "recipes" / "tts" / "emotion-offline-sync.yaml"
TTS_SFT = REPO / "assets" / "tts-tiny-sft"
EMOTION_SFT = REPO / "assets" / "tts-tiny-sft-sync-rare-styles"  # the sync world, scarce styled speech
STYLE_CLASSIFIER = REPO / "assets" / "style-classifier.json"
TRACKS = ("asr", "tts", "emotion")


def asr_stage(out: Path, *, n_train: int, n_test: int, recipe: Path = ASR_RECIPE) -> dict:
    asr = out / "asr"
    paths = [f"model.path={asr / 'base'}", f"build_pairs.manifest={asr / 'data' / 'train.jsonl'}",
             f"build_pairs.work_dir={asr / 'pairs'}", f"data.pairs={asr / 'pairs' / 'pairs_ref.jsonl'}",
             f"train.out_dir={asr / 'lpo'}"]
    run_command(["make-asr-data", "--out", str(asr / "data"), "--n-train", str(n_train), "--n-test", str(n_test)],
         done=asr / "data" / "test.jsonl")
    run_command(["import-whisper-ct2", "bundled", str(asr / "base")], done=asr / "base" / "model.safetensors")
    run_command(["build-pairs", str(recipe), *paths], done=asr / "pairs" / "pairs_ref.jsonl")
    train_command(recipe, paths, asr / "lpo")
    run_command(["eval", "--wer", "--model", str(asr / "base"), "--model", str(asr / "lpo" / "model"), "--label", "base",
          "--label", "lpo", "--data", str(asr / "data" / "test.jsonl"), "--out", str(asr / "eval")],
         done=asr / "eval" / "table.md")
    metrics = json.loads((asr / "eval" / "metrics.json").read_text())
    pairs = json.loads((asr / "pairs" / "summary.json").read_text())
    return {"base_model": str(asr / "base"), "lpo_model": str(asr / "lpo" / "model"),
            "test_set": str(asr / "data" / "test.jsonl"), "pairs": pairs["pairs_written"],
            "wer_before": metrics["base"]["wer"], "wer_after": metrics["lpo"]["wer"],
            "wer_ratio": metrics["lpo"]["wer"] / max(metrics["base"]["wer"], 1e-9),
            "table": (asr / "eval" / "table.md").read_text(), "curves": str(asr / "lpo" / "training_curves.png")}


def tts_world(out: Path, *, n_prompts: int, n_test: int, sft: Path = TTS_SFT, track: str = "tts") -> Path:
    """A demo-sized copy of the SFT model's world (its sizes and seed, from sft/world.json) in
    `<out>/<track>/data`: the held-out prompts are exactly the sentences the SFT model never saw."""
    data = out / track / "data"
    world = json.loads((sft / "world.json").read_text())
    args = ["make-tts-data", "--out", str(data), "--n-train", str(world["n_train"]), "--n-dev", str(world["n_dev"]),
            "--n-test", str(world["n_test"]), "--seed", str(world["seed"]), "--style-share", str(world["style_share"]),
            "--limit", f"train={n_prompts}", "--limit", "dev=0", "--limit", f"test={n_test}",
            "--limit", f"test_style={n_test}", "--no-ceiling", *(["--phoneme-sync"] if world.get("phoneme_sync") else [])]
    run_command(args, done=data / "test_style_prompts.jsonl")
    return data


def _align(stage: Path, recipe: Path, sft: Path, paths: list[str], heldout: Path, eval_extra: list[str]) -> tuple:
    """build-pairs -> train -> eval (SFT vs LPO on `heldout`) for a TTS recipe; (metrics, pair summary)."""
    paths = [f"model.path={sft}", f"build_pairs.work_dir={stage / 'pairs'}",
             f"data.pairs={stage / 'pairs' / 'pairs_ref.jsonl'}", f"train.out_dir={stage / 'lpo'}", *paths]
    run_command(["build-pairs", str(recipe), *paths], done=stage / "pairs" / "pairs_ref.jsonl")
    train_command(recipe, paths, stage / "lpo")
    # One sampling thread, as the recipes' runtime.sampling_threads: the tiny models sample fastest so.
    run_command(["eval", "--wer", "--model", str(sft), "--model", str(stage / "lpo" / "model"), "--label", "sft", "--label",
          "lpo", "--data", str(heldout), "--out", str(stage / "eval"), "--sampling-threads", "1", *eval_extra],
         done=stage / "eval" / "table.md")
    return (json.loads((stage / "eval" / "metrics.json").read_text()),
            json.loads((stage / "pairs" / "summary.json").read_text()))


def _before_after(m: dict, keys: tuple[str, ...]) -> dict:
    return {f"{k}_{when}": m[label].get(k) for k in keys for when, label in (("before", "sft"), ("after", "lpo"))}


def tts_stage(out: Path, data: Path, *, n_prompts: int, sft: Path = TTS_SFT, recipe: Path = TTS_RECIPE) -> dict:
    tts = out / "tts"
    m, pairs = _align(tts, recipe, sft, [f"build_pairs.prompts={data / 'train_prompts.jsonl'}",
                                         f"build_pairs.gold={data / 'train.jsonl'}", f"build_pairs.limit={n_prompts}"],
                      data / "test_prompts.jsonl", [])
    return {"sft_model": str(sft), "lpo_model": str(tts / "lpo" / "model"), "test_set": str(data / "test_prompts.jsonl"),
            "pairs": pairs["pairs_written"], **_before_after(m, ("wer", "failure_rate", "sim", "dnsmos")),
            "wer_ratio": m["lpo"]["wer"] / max(m["sft"]["wer"], 1e-9),
            "table": (tts / "eval" / "table.md").read_text(), "curves": str(tts / "lpo" / "training_curves.png")}


def emotion_stage(out: Path, data: Path, *, n_prompts: int, sft: Path = EMOTION_SFT, recipe: Path = EMOTION_RECIPE,
                  classifier: Path = STYLE_CLASSIFIER) -> dict:
    emo = out / "emotion"
    m, pairs = _align(emo, recipe, sft, [f"build_pairs.prompts={data / 'style_prompts.jsonl'}",
                                         f"build_pairs.limit={n_prompts}", f"build_pairs.emotion.path={classifier}"],
                      data / "test_style_prompts.jsonl", ["--emotion-scorer", f"prosody:{classifier}"])
    return {"sft_model": str(sft), "lpo_model": str(emo / "lpo" / "model"),
            "test_set": str(data / "test_style_prompts.jsonl"), "pairs": pairs["pairs_written"],
            "pair_rules": {k: v for k, v in pairs.items() if isinstance(v, int)},
            **_before_after(m, ("emotion_acc", "wer", "failure_rate")),
            "table": (emo / "eval" / "table.md").read_text(), "curves": str(emo / "lpo" / "training_curves.png")}


def run_demo(out: str | Path, *, n_train: int = 200, n_test: int = 60, tracks: tuple[str, ...] = TRACKS,
             n_tts_prompts: int = 96, n_tts_test: int = 60) -> dict:
    unknown = [t for t in tracks if t not in TRACKS]
    if unknown:
        raise UserError(f"--tracks: unknown {unknown} (known: {', '.join(TRACKS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary: dict = {}
    if "asr" in tracks:
        summary["asr"] = asr_stage(out, n_train=n_train, n_test=n_test)
    if "tts" in tracks:
        data = tts_world(out, n_prompts=n_tts_prompts, n_test=n_tts_test)
        summary["tts"] = tts_stage(out, data, n_prompts=n_tts_prompts)
    if "emotion" in tracks:  # its SFT model is the phoneme-synchronous one: its own world
        data = tts_world(out, n_prompts=n_tts_prompts, n_test=n_tts_test, sft=EMOTION_SFT, track="emotion")
        summary["emotion"] = emotion_stage(out, data, n_prompts=n_tts_prompts)
    summary["seconds"] = round(time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    md = ["# lpo-speech demo", ""]
    if "asr" in summary:
        a = summary["asr"]
        md += ["## ASR: Whisper tiny.en, LPO on perturbation-based pairs", "",
               f"Held-out set: `{a['test_set']}`; {a['pairs']} training pairs; curves: `{a['curves']}`.", "",
               a["table"], f"WER {a['wer_before']:.4f} -> {a['wer_after']:.4f} (x{a['wer_ratio']:.3f})", ""]
    if "tts" in summary:
        t = summary["tts"]
        md += ["## TTS: tiny codec LM (Codec2 700C), LPO on gold-as-chosen pairs judged by Whisper tiny.en", "",
               f"Held-out prompts: `{t['test_set']}`; {t['pairs']} training pairs; curves: `{t['curves']}`.", "",
               t["table"], f"WER {t['wer_before']:.4f} -> {t['wer_after']:.4f} (x{t['wer_ratio']:.3f})", ""]
    if "emotion" in summary:
        e = summary["emotion"]
        md += ["## Emotion (offline: speaking styles): LPO on pareto pairs over style and CER", "",
               f"Held-out styled prompts: `{e['test_set']}`; {e['pairs']} training pairs; curves: `{e['curves']}`.",
               "", e["table"], f"style accuracy {e['emotion_acc_before']:.3f} -> {e['emotion_acc_after']:.3f}; "
               f"WER {e['wer_before']:.4f} -> {e['wer_after']:.4f}; "
               f"failure rate {e['failure_rate_before']:.3f} -> {e['failure_rate_after']:.3f}", ""]
    (out / "summary.md").write_text("\n".join(md))
    print("\n" + "\n".join(md))
    print(f"summary: {out / 'summary.json'} ({summary['seconds']} s)")
    return summary
