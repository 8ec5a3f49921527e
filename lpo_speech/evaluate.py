"""`lpo-speech eval --wer`: error rates of one or more models on a manifest, side by side.

ASR models (speech-seq2seq) transcribe an ASR manifest. Each model writes
`<out>/<label>/utterances.jsonl` (id, ref, hyp, wer, cer; resumable; sharded across processes under
torchrun, merged in manifest order) and `<out>/<label>/metrics.json`; the run writes
`<out>/metrics.json` (the metrics of a single model, or {label: metrics} for several), `<out>/table.md`
and `<out>/runtime.json` (where it ran: every rank's device, dtype, judge device, threads; printed at
the start). Normalization and the WER conventions: lpo_speech.metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lpo_speech.audio import load_audio
from lpo_speech.distributed import init_distributed, record_runtime, resolve_device
from lpo_speech.errors import UserError
from lpo_speech.metrics import corpus_scores, utterance_errors
from lpo_speech.precision import dtype_name, resolve_dtype
from lpo_speech.records import AsrUtterance, load_jsonl, resolve_audio
from lpo_speech.stages import check_settings, run_sharded, set_threads

ASR_MODEL_TYPES = {"whisper", "speech-encoder-decoder"}


def model_type(path: str) -> str:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise UserError(f"{path}: not a model directory (no config.json)")
    return json.loads(cfg.read_text()).get("model_type", "")


def eval_asr(model: str, manifest: str, out_dir: Path, *, batch_size: int = 8, beam: int = 1, lang: str = "en",
             device: str = "auto", dtype: str = "auto", quiet: bool = False, state_cache: dict | None = None) -> dict:
    """`device` by the placement rule (lpo_speech.distributed), `dtype` by lpo_speech.precision.
    `state_cache` maps (encoder fingerprint, utterance id) to encoder states, shared between the
    models of one evaluation in a process: models with identical encoders run it once per utterance
    (under torchrun each rank gets the same utterances for every model, so sharing still works)."""
    from lpo_speech.asr.decode import AsrDecoder

    utts = load_jsonl(manifest, AsrUtterance)
    info = init_distributed(device)
    weights = resolve_dtype(dtype, info.device, where="--dtype")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "utterances.jsonl"
    # bfloat16 decodes other transcripts; float32 (every run before dtypes were kept) adds no key.
    settings = {"model": str(Path(model).resolve()), "beam": beam, "lang": lang,
                **({"dtype": dtype_name(weights)} if weights != torch.float32 else {})}
    check_settings(out, settings)  # before the model loads: a folder made another way stops at once
    decoder = AsrDecoder(model, info.device, dtype=weights)
    cache = {} if state_cache is None else state_cache
    fingerprint = decoder.encoder_fingerprint()

    def process(chunk: list[AsrUtterance]) -> list[dict]:
        missing = [u for u in chunk if (fingerprint, u.id) not in cache]
        if missing:
            wavs = [load_audio(resolve_audio(manifest, u.audio), sample_rate=16_000,
                               where=f"{manifest}: id {u.id}") for u in missing]
            for u, st in zip(missing, decoder.encode(wavs)):
                cache[(fingerprint, u.id)] = st.to("cpu", torch.float16)
        states = torch.stack([cache[(fingerprint, u.id)] for u in chunk]).float()
        rows = []
        for u, (hyp,) in zip(chunk, decoder.transcribe(states=states, num_beams=beam)):
            errs = utterance_errors(u.text, hyp, lang)
            rows.append({"id": u.id, "ref": u.text, "hyp": hyp, "wer": errs["wer"], "cer": errs["cer"]})
        return rows

    ordered = run_sharded(out, utts, key=lambda u: u.id, process=process, batch_size=batch_size,
                          desc=f"eval {out_dir.name}", unit="utt", device=device, quiet=quiet, settings=settings)
    metrics = {**corpus_scores([r["ref"] for r in ordered], [r["hyp"] for r in ordered], lang),
               "model": model, "data": str(manifest), "decoding": "greedy" if beam == 1 else f"beam {beam}"}
    if info.is_main:
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


def evaluate(models: list[str], labels: list[str] | None, manifest: str, out: str, *, threads: int | None = None,
             **kw) -> dict[str, dict]:
    """Every model on `manifest`, side by side. `kw`: eval_asr's options (device, dtype, batch_size,
    ...); `tts`: eval_tts's own (sampling, judge_device, sampling_threads, ...); `threads`: torch CPU
    threads of each process (None: torch's default)."""
    labels = labels or [Path(m).name or m for m in models]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise UserError("--label: give one distinct label per --model")
    out_dir = Path(out)
    tts_kw = kw.pop("tts", None) or {}  # TTS-only options (sampling, reference voice, DNSMOS, judge device)
    set_threads(threads)
    device = kw.get("device", "auto")
    info = init_distributed(device, where="--device")
    judge = tts_kw.get("judge_device")
    record_runtime("eval", info, out_dir, quiet=kw.get("quiet", False),
                   weights=dtype_name(resolve_dtype(kw.get("dtype", "auto"), info.device, where="--dtype")),
                   judge_device=str(resolve_device(judge or device, where="--judge-device" if judge else "--device")),
                   threads=torch.get_num_threads(), sampling_threads=tts_kw.get("sampling_threads"))
    results, state_cache = {}, {}
    for model, label in zip(models, labels):
        if model_type(model) in ASR_MODEL_TYPES:
            results[label] = eval_asr(model, manifest, out_dir / label, state_cache=state_cache, **kw)
        elif (Path(model) / "config.json").is_file() and "tts" in json.loads((Path(model) / "config.json").read_text()):
            from lpo_speech.tts.evaluate import eval_tts  # codec-LM TTS: synthesize the prompt manifest

            results[label] = eval_tts(model, manifest, out_dir / label, **kw, **tts_kw)
        else:
            raise UserError(f"{model}: model type {model_type(model)!r} has no evaluator (ASR: whisper)")
    summary = next(iter(results.values())) if len(results) == 1 else results
    if info.is_main:  # under torchrun (sharded eval) one process writes
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
        (out_dir / "table.md").write_text(markdown_table(results))
    return results
