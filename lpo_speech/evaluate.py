"""`lpo-speech eval --wer`: error rates of one or more models on a manifest, side by side.

ASR models (speech-seq2seq) transcribe an ASR manifest. Each model writes
`<out>/<label>/utterances.jsonl` (id, ref, hyp, wer, cer; resumable; sharded across processes under
torchrun, merged in manifest order) and `<out>/<label>/metrics.json`; the run writes
`<out>/metrics.json` (the metrics of a single model, or {label: metrics} for several), `<out>/table.md`
and `<out>/runtime.json` (where it ran: every rank's device, dtype, judge device, threads; printed at
the start, written with the results). Every model's inputs (each row's audio, the model's config) are
checked, and each earlier `<label>/utterances.jsonl` compared with what would make it now (model and
manifest by content, decoding: lpo_speech.stages), before anything is written; a rerun made another
way stops in one line unless `--overwrite`. Normalization and the WER conventions: lpo_speech.wer
(`--lang zh`: characters, and the table leads with CER, as Seed-TTS-eval reports Chinese).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lpo_speech.audio import load_audio
from lpo_speech.distributed import init_distributed, record_runtime, resolve_device
from lpo_speech.errors import UserError, clip
from lpo_speech.wer import corpus_scores, headline, utterance_errors
from lpo_speech.precision import dtype_name, resolve_dtype
from lpo_speech.asr.sources import InputColumns, converted_manifest
from lpo_speech.records import AsrUtterance, load_jsonl, resolve_audio
from lpo_speech.stages import (OVERWRITE_HINT, check_settings, created_outputs, input_file, model_folder, run_sharded,
                               set_threads)

ASR_MODEL_TYPES = {"whisper", "speech-encoder-decoder", "qwen2_audio"}  # qwen2_audio: lpo_speech.adapters.audio_llm


# The layout of an utterance row and how it is computed: raise it when either changes, so rows made by
# older code are not resumed as if this code had made them.
SCHEMA = 1


def model_config(path: str) -> dict:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise UserError(f"{path}: not a model directory (no config.json)")
    try:
        d = json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"cannot load model: config.json is not a valid JSON file ({clip(str(e), 80)})",
                        where=str(path)) from None
    if not isinstance(d, dict):
        raise UserError("cannot load model: config.json is not a JSON object", where=str(path))
    return d


def model_type(path: str) -> str:
    return model_config(path).get("model_type", "")


def model_kind(path: str) -> str:
    """"asr" (a speech-seq2seq model or audio LLM) or "tts" (a codec LM), from config.json alone."""
    cfg = model_config(path)
    if cfg.get("model_type", "") in ASR_MODEL_TYPES:
        return "asr"
    if "tts" in cfg:
        return "tts"
    raise UserError(f"{path}: model type {cfg.get('model_type', '')!r} has no evaluator (ASR: whisper, qwen2_audio)")


def check_asr_manifest(manifest: str) -> list[AsrUtterance]:
    """The manifest's rows, every audio checked (readable, mono, 16 kHz, finite: lpo_speech.audio)."""
    utts = load_jsonl(manifest, AsrUtterance)
    for u in utts:
        load_audio(resolve_audio(manifest, u.audio), sample_rate=16_000, where=f"{manifest}: id {u.id}")
    return utts


def check_asr_eval(model: str, manifest: str, out_dir: str | Path, *, beam: int = 1, lang: str = "en",
                   device: str = "auto", dtype: str = "auto", overwrite: bool = False,
                   utterances: list[AsrUtterance] | None = None, **_ignored) -> tuple[list[AsrUtterance], dict]:
    """What eval_asr checks before it writes anything or loads weights: the manifest and every row's
    audio (`utterances`: rows already checked by check_asr_manifest), and an earlier output in
    `out_dir` (other model, data or settings stop in one line unless `overwrite`).
    Returns (utterances, the settings that make a row: lpo_speech.stages)."""
    info = init_distributed(device)
    weights = resolve_dtype(dtype, info.device, where="--dtype")
    utts = utterances if utterances is not None else check_asr_manifest(manifest)
    # bfloat16 decodes other transcripts; float32 (every run before dtypes were kept) adds no key.
    settings = {"model": model_folder(model), "data": input_file(manifest), "schema": SCHEMA, "beam": beam,
                "lang": lang, **({"dtype": dtype_name(weights)} if weights != torch.float32 else {})}
    if not overwrite:
        check_settings(Path(out_dir) / "utterances.jsonl", settings, record=False, hint=OVERWRITE_HINT)
    return utts, settings


def eval_asr(model: str, manifest: str, out_dir: Path, *, batch_size: int = 8, beam: int = 1, lang: str = "en",
             device: str = "auto", dtype: str = "auto", quiet: bool = False, state_cache: dict | None = None,
             overwrite: bool = False, utterances: list[AsrUtterance] | None = None) -> dict:
    """`device` by the placement rule (lpo_speech.distributed), `dtype` by lpo_speech.precision.
    `state_cache` maps (encoder fingerprint, utterance id) to encoder states, shared between the
    models of one evaluation in a process: models with identical encoders run it once per utterance
    (under torchrun each rank gets the same utterances for every model, so sharing still works).
    `overwrite`: discard an earlier output made another way instead of stopping; `utterances`: the
    manifest's rows already checked (check_asr_manifest)."""
    from lpo_speech.asr.decode import make_asr_decoder

    info = init_distributed(device)
    weights = resolve_dtype(dtype, info.device, where="--dtype")
    out_dir = Path(out_dir)
    out = out_dir / "utterances.jsonl"
    # Before the model loads: a bad row or a folder made another way stops at once, nothing written.
    utts, settings = check_asr_eval(model, manifest, out_dir, beam=beam, lang=lang, device=device, dtype=dtype,
                                    overwrite=overwrite, utterances=utterances)
    decoder = make_asr_decoder(model, info.device, dtype=weights)  # Whisper or an audio LLM, by model type
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

    with created_outputs(out_dir):  # settings recorded (after the model loaded) and rows written here
        ordered = run_sharded(out, utts, key=lambda u: u.id, process=process, batch_size=batch_size,
                              desc=f"eval {out_dir.name}", unit="utt", device=device, quiet=quiet, settings=settings,
                              overwrite=overwrite, also=[out_dir / "metrics.json"])
        metrics = {**corpus_scores([r["ref"] for r in ordered], [r["hyp"] for r in ordered], lang),
                   "model": model, "data": str(manifest), "decoding": "greedy" if beam == 1 else f"beam {beam}"}
        if info.is_main:
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def markdown_table(results: dict[str, dict], lang: str = "en") -> str:
    """The models' metrics side by side; the language's headline rate first (zh: CER, lpo_speech.wer)."""
    rates = ("cer", "wer") if headline(lang) == "cer" else ("wer", "cer")
    keys = [k for k in (*rates, "wer_utt_mean", "failure_rate", "not_terminated_rate", "sim", "dnsmos",
                        "emotion_acc", "emotion_score", "runaway_rate", "wer_no_runaway", "n")
            if any(k in m for m in results.values())]
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for label, m in results.items():
        cells = [(f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, ""))) for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(models: list[str], labels: list[str] | None, manifest: str, out: str, *, threads: int | None = None,
             overwrite: bool = False, **kw) -> dict[str, dict]:
    """Every model on `manifest`, side by side. `kw`: eval_asr's options (device, dtype, batch_size,
    ...); `tts`: eval_tts's own (sampling, judge_device, sampling_threads, ...); `threads`: torch CPU
    threads of each process (None: torch's default). Every model's inputs are checked, and every
    earlier output in `out` compared, before anything is written (`overwrite`: discard those made
    another way instead of stopping); a failure leaves nothing it created behind unless it holds rows."""
    from lpo_speech.hub import local_model

    labels = labels or [Path(m).name or m for m in models]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise UserError("--label: give one distinct label per --model")
    models = [local_model(m) for m in models]  # a hub id: its snapshot in the Hugging Face cache
    out_dir = Path(out)
    tts_kw = kw.pop("tts", None) or {}  # TTS-only options (sampling, reference voice, DNSMOS, judge device)
    set_threads(threads)
    device = kw.get("device", "auto")
    info = init_distributed(device, where="--device")
    resolve_dtype(kw.get("dtype", "auto"), info.device, where="--dtype")
    resolve_device(tts_kw.get("judge_device") or device, where="--judge-device" if tts_kw.get("judge_device") else "--device")
    kinds = [model_kind(m) for m in models]
    cols = kw.pop("columns", None) or InputColumns()
    if "asr" not in kinds:
        return _evaluate(models, labels, kinds, manifest, out_dir, info, overwrite=overwrite, **kw, tts=tts_kw)
    # A datasets dataset or a lhotse CutSet becomes a JSONL manifest in out/input/ first (asr.sources).
    with converted_manifest(manifest, out_dir / "input", cols, overwrite=overwrite, quiet=kw.get("quiet", False)) as jsonl:
        return _evaluate(models, labels, kinds, str(jsonl), out_dir, info, overwrite=overwrite, **kw, tts=tts_kw)


def _evaluate(models: list[str], labels: list[str], kinds: list[str], manifest: str, out_dir: Path, info, *,
              overwrite: bool, tts: dict, **kw) -> dict[str, dict]:
    from lpo_speech.tts.evaluate import check_tts_eval, eval_tts  # codec-LM TTS: synthesize the prompt manifest

    tts_kw = tts
    device = kw.get("device", "auto")
    judge = tts_kw.get("judge_device")
    weights = dtype_name(resolve_dtype(kw.get("dtype", "auto"), info.device, where="--dtype"))
    judge_at = str(resolve_device(judge or device, where="--judge-device" if judge else "--device"))
    utts = None  # an ASR manifest's rows, their audio checked once for every ASR model
    for model, label, kind in zip(models, labels, kinds):
        if kind == "asr":
            utts, _ = check_asr_eval(model, manifest, out_dir / label, overwrite=overwrite, utterances=utts, **kw)
        else:
            check_tts_eval(model, manifest, out_dir / label, overwrite=overwrite, **kw, **tts_kw)
    where = dict(weights=weights, judge_device=judge_at, threads=torch.get_num_threads(),
                 sampling_threads=tts_kw.get("sampling_threads"))
    record_runtime("eval", info, quiet=kw.get("quiet", False), **where)  # said now, written with the results
    with created_outputs(out_dir, *(out_dir / label for label in labels)):
        results, state_cache = {}, {}
        for model, label, kind in zip(models, labels, kinds):
            if kind == "asr":
                results[label] = eval_asr(model, manifest, out_dir / label, state_cache=state_cache,
                                          overwrite=overwrite, utterances=utts, **kw)
            else:
                results[label] = eval_tts(model, manifest, out_dir / label, overwrite=overwrite, **kw, **tts_kw)
        summary = next(iter(results.values())) if len(results) == 1 else results
        if info.is_main:  # under torchrun (sharded eval) one process writes
            (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
            (out_dir / "table.md").write_text(markdown_table(results, kw.get("lang", "en")))
        # runtime.json describes the run that made metrics.json: a failed rerun leaves the earlier one.
        record_runtime("eval", info, out_dir, quiet=True, **where)
    return results


def data_sets(specs: list[str]) -> list[tuple[str, str]]:
    """`--data [NAME=]PATH` (repeatable) as (name, path); a name defaults to the file's stem."""
    import re

    sets = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not re.fullmatch(r"[\w.-]+", name) or not path:
            name, path = Path(spec.rstrip("/")).name.split(".")[0] or spec, spec
        sets.append((name, path))
    names = [n for n, _ in sets]
    if len(set(names)) != len(names):
        raise UserError(f"--data: two sets named {sorted(n for n in names if names.count(n) > 1)[0]!r} "
                        "(name them: --data in-domain=test.jsonl --data out-of-domain=ood_test.jsonl)")
    return sets


def comparison_table(by_set: dict[str, dict[str, dict]], baseline: str, lang: str = "en") -> str:
    """One row per model: each set's headline rate (WER, or CER for zh) and its ratio to the baseline
    model's on the same set (and the failure rate for TTS, the emotion accuracy for styled prompts), so
    a gain on one set bought by a loss on another (forgetting out of domain) shows at a glance."""
    rate = headline(lang)
    labels = list(next(iter(by_set.values())))
    tts = any("failure_rate" in m for res in by_set.values() for m in res.values())
    styled = any("emotion_acc" in m for res in by_set.values() for m in res.values())
    head = ["model"]
    for name in by_set:
        head += [f"{name} {rate}", f"{name} vs {baseline}"] + ([f"{name} failure"] if tts else []) + (
            [f"{name} emotion acc"] if styled else [])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for label in labels:
        cells = [label]
        for name, res in by_set.items():
            m, base = res[label], res[baseline]
            ratio = m[rate] / base[rate] if base.get(rate) else float("nan")
            cells += [f"{m[rate]:.4f}", f"x{ratio:.3f}"] + ([f"{m.get('failure_rate', float('nan')):.3f}"] if tts else []) + (
                [f"{m.get('emotion_acc', float('nan')):.3f}"] if styled else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_sets(models: list[str], labels: list[str] | None, specs: list[str], out: str, *,
                  baseline: str | None = None, **kw) -> tuple[dict, str]:
    """`eval --data A --data B ...`: every model on every set. One set writes OUT as `evaluate` does;
    several write OUT/<set>/ each, and OUT/table.md + OUT/metrics.json ({set: {label: metrics}}) with
    every set's rate and its ratio to `baseline` (default: the first model) side by side.
    Returns (results, the table to print)."""
    sets = data_sets(specs)
    lang = kw.get("lang", "en")
    if len(sets) == 1:
        results = evaluate(models, labels, sets[0][1], out, **kw)
        return results, markdown_table(results, lang)
    by_set = {name: evaluate(models, labels, path, str(Path(out) / name), **kw) for name, path in sets}
    names = list(next(iter(by_set.values())))
    baseline = baseline or names[0]
    if baseline not in names:
        raise UserError(f"--baseline {baseline!r}: not one of the labels ({', '.join(names)})")
    table = comparison_table(by_set, baseline, lang)
    parts = [table] + [f"\n{name} (`{path}`):\n\n" + markdown_table(by_set[name], lang) for name, path in sets]
    if init_distributed(kw.get("device", "auto")).is_main:
        (Path(out) / "metrics.json").write_text(json.dumps(by_set, indent=2))
        (Path(out) / "table.md").write_text("".join(parts))
    return by_set, "".join(parts)
