"""`lpo-speech eval --wer`: error rates of one or more models on a manifest, side by side.

ASR models (speech-seq2seq) transcribe an ASR manifest. Each model writes
`<out>/<label>/utterances.jsonl` (id, ref, hyp, wer, cer; resumable) and `<out>/<label>/metrics.json`;
the run writes `<out>/metrics.json` (the metrics of a single model, or {label: metrics} for several)
and `<out>/table.md`. Normalization and the WER conventions: lpo_speech.metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from lpo_speech.audio import load_audio
from lpo_speech.errors import UserError
from lpo_speech.metrics import corpus_scores, utterance_errors
from lpo_speech.records import AsrUtterance, JsonlWriter, load_jsonl, resolve_audio
from lpo_speech.stages import check_settings

ASR_MODEL_TYPES = {"whisper", "speech-encoder-decoder"}


def model_type(path: str) -> str:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise UserError(f"{path}: not a model directory (no config.json)")
    return json.loads(cfg.read_text()).get("model_type", "")


def eval_asr(model: str, manifest: str, out_dir: Path, *, batch_size: int = 8, beam: int = 1, lang: str = "en",
             device: str = "cpu", quiet: bool = False, state_cache: dict | None = None) -> dict:
    """`state_cache` maps (encoder fingerprint, utterance id) to encoder states, shared between the
    models of one evaluation: models with identical encoders run it once per utterance."""
    from lpo_speech.asr.decode import AsrDecoder

    utts = load_jsonl(manifest, AsrUtterance)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Before the model loads: a folder made another way stops at once.
    check_settings(out_dir / "utterances.jsonl", {"model": str(Path(model).resolve()), "beam": beam, "lang": lang})
    decoder = AsrDecoder(model, device)
    cache = {} if state_cache is None else state_cache
    fingerprint = decoder.encoder_fingerprint()
    with JsonlWriter(out_dir / "utterances.jsonl") as writer:
        todo = [u for u in utts if u.id not in writer.done]
        bar = tqdm(total=len(utts), initial=len(utts) - len(todo), desc=f"eval {out_dir.name}", unit="utt",
                   disable=quiet, dynamic_ncols=True)
        for s in range(0, len(todo), batch_size):
            chunk = todo[s:s + batch_size]
            missing = [u for u in chunk if (fingerprint, u.id) not in cache]
            if missing:
                wavs = [load_audio(resolve_audio(manifest, u.audio), sample_rate=16_000,
                                   where=f"{manifest}: id {u.id}") for u in missing]
                for u, st in zip(missing, decoder.encode(wavs)):
                    cache[(fingerprint, u.id)] = st.to("cpu", torch.float16)
            states = torch.stack([cache[(fingerprint, u.id)] for u in chunk]).float()
            for u, (hyp,) in zip(chunk, decoder.transcribe(states=states, num_beams=beam)):
                errs = utterance_errors(u.text, hyp, lang)
                writer.write({"id": u.id, "ref": u.text, "hyp": hyp, "wer": errs["wer"], "cer": errs["cer"]})
            bar.update(len(chunk))
        bar.close()
    rows = {r["id"]: r for r in map(json.loads, (out_dir / "utterances.jsonl").read_text().splitlines())}
    ordered = [rows[u.id] for u in utts]
    metrics = {**corpus_scores([r["ref"] for r in ordered], [r["hyp"] for r in ordered], lang),
               "model": model, "data": str(manifest), "decoding": "greedy" if beam == 1 else f"beam {beam}"}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def markdown_table(results: dict[str, dict]) -> str:
    keys = [k for k in ("wer", "cer", "wer_utt_mean", "failure_rate", "not_terminated_rate", "sim", "dnsmos",
                        "emotion_acc", "emotion_score", "runaway_rate", "wer_no_runaway", "n")
            if any(k in m for m in results.values())]
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for label, m in results.items():
        cells = [(f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, ""))) for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(models: list[str], labels: list[str] | None, manifest: str, out: str, **kw) -> dict[str, dict]:
    labels = labels or [Path(m).name or m for m in models]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise UserError("--label: give one distinct label per --model")
    out_dir = Path(out)
    results, state_cache = {}, {}
    tts_kw = kw.pop("tts", None) or {}  # TTS-only options (sampling, reference voice, DNSMOS)
    import os

    for model, label in zip(models, labels):
        if model_type(model) in ASR_MODEL_TYPES:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise UserError(f"{model}: ASR evaluation runs in one process (launch `lpo-speech eval` without torchrun)")
            results[label] = eval_asr(model, manifest, out_dir / label, state_cache=state_cache, **kw)
        elif (Path(model) / "config.json").is_file() and "tts" in json.loads((Path(model) / "config.json").read_text()):
            from lpo_speech.tts.evaluate import eval_tts  # codec-LM TTS: synthesize the prompt manifest

            results[label] = eval_tts(model, manifest, out_dir / label, **kw, **tts_kw)
        else:
            raise UserError(f"{model}: model type {model_type(model)!r} has no evaluator (ASR: whisper)")
    summary = next(iter(results.values())) if len(results) == 1 else results
    from lpo_speech.distributed import init_distributed

    if init_distributed("cpu").is_main:  # under torchrun (sharded TTS eval) one process writes
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
        (out_dir / "table.md").write_text(markdown_table(results))
    return results
