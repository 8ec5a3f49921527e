"""`lpo-speech eval --wer`: error rates of one or more models on a manifest, side by side.

ASR models (speech-seq2seq) transcribe an ASR manifest. Each model writes
`<out>/<label>/utterances.jsonl` (id, ref, hyp, wer, cer; resumable; sharded across processes under
torchrun, merged in manifest order) and `<out>/<label>/metrics.json`; the run writes
`<out>/metrics.json` (the metrics of a single model, or {label: metrics} for several), `<out>/table.md`
and `<out>/runtime.json` (where it ran: every rank's device, dtype, judge device, threads; printed at
the start, written with the results). Every model's inputs (each row's audio, the model's config) are
checked, and each earlier `<label>/utterances.jsonl` compared with what would make it now (model and
manifest by content, decoding: lpo_speech.stages), before anything is written; a rerun made another
way stops in one line unless `--overwrite`. Every row's audio is checked against its transcript first
(lpo_speech.asr.audio_check: longer than the models hear, or far less speech than the text needs): such
a row stops the run, or with --skip-bad is left out, counted in each model's `skipped`. Normalization
and the WER conventions: lpo_speech.wer (`--lang zh`: characters, and the table leads with CER, as
Seed-TTS-eval reports Chinese).

With several models, each is compared with the baseline (`--baseline`, default the first) utterance
by utterance (paired_change): the change in word errors and in WER with a 95% paired-bootstrap
interval and a sign test (lpo_speech.stats), in `<out>/metrics.json` as `vs_<baseline>` and in the
table, which says whether the change is within noise.

Layout: one unnamed set (`--data PATH`) writes `<out>/<label>/`; a named set (`--data NAME=PATH`), or
several sets, write `<out>/<set>/<label>/` each, with `<out>/table.md` and `<out>/metrics.json` over
every set (evaluate_sets).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lpo_speech.audio import load_audio
from lpo_speech.asr.audio_check import Checked, announce, check_utterances, decoded_measure, model_window
from lpo_speech.distributed import init_distributed, record_runtime, resolve_device
from lpo_speech.errors import UserError, clip
from lpo_speech.stats import RESAMPLES, SEED, paired_bootstrap, sign_test_p
from lpo_speech.wer import corpus_scores, headline, reference_words, utterance_errors
from lpo_speech.precision import dtype_name, resolve_dtype
from lpo_speech.asr.sources import InputColumns, converted_manifest, row_namer
from lpo_speech.records import AsrUtterance, load_numbered, resolve_audio
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


def check_asr_manifest(manifest: str, *, window: int | None = None, skip_bad: bool = False,
                       name=None) -> Checked:
    """The manifest's rows, every audio checked: readable and finite (lpo_speech.audio, which converts it
    to 16 kHz mono), then against its transcript for models that hear `window` samples (audio_check;
    `skip_bad`, `name`: check_utterances)."""
    return check_utterances(load_numbered(manifest, AsrUtterance), manifest, window=window,
                            measure=decoded_measure(), skip_bad=skip_bad, name=name)


def check_asr_eval(model: str, manifest: str, out_dir: str | Path, *, beam: int = 1, lang: str = "en",
                   device: str = "auto", dtype: str = "auto", overwrite: bool = False,
                   utterances: list[AsrUtterance] | None = None, **_ignored) -> tuple[list[AsrUtterance], dict]:
    """What eval_asr checks before it writes anything or loads weights: the manifest and every row's
    audio (`utterances`: rows already checked by check_asr_manifest), and an earlier output in
    `out_dir` (other model, data or settings stop in one line unless `overwrite`).
    Returns (utterances, the settings that make a row: lpo_speech.stages)."""
    info = init_distributed(device)
    weights = resolve_dtype(dtype, info.device, where="--dtype")
    utts = utterances if utterances is not None else check_asr_manifest(manifest, window=model_window(model)).kept
    # bfloat16 decodes other transcripts; float32 (every run before dtypes were kept) adds no key.
    settings = {"model": model_folder(model), "data": input_file(manifest), "schema": SCHEMA, "beam": beam,
                "lang": lang, **({"dtype": dtype_name(weights)} if weights != torch.float32 else {})}
    if not overwrite:
        check_settings(Path(out_dir) / "utterances.jsonl", settings, record=False, hint=OVERWRITE_HINT)
    return utts, settings


def eval_asr(model: str, manifest: str, out_dir: Path, *, batch_size: int = 8, beam: int = 1, lang: str = "en",
             device: str = "auto", dtype: str = "auto", quiet: bool = False, state_cache: dict | None = None,
             overwrite: bool = False, utterances: list[AsrUtterance] | None = None, skipped: int | None = None) -> dict:
    """`device` by the placement rule (lpo_speech.distributed), `dtype` by lpo_speech.precision.
    `state_cache` maps (encoder fingerprint, utterance id) to encoder states, shared between the
    models of one evaluation in a process: models with identical encoders run it once per utterance
    (under torchrun each rank gets the same utterances for every model, so sharing still works).
    `overwrite`: discard an earlier output made another way instead of stopping; `utterances`: the
    manifest's rows already checked (check_asr_manifest); `skipped`: how many rows that check left out
    (--skip-bad), said in the metrics."""
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
                   "words": reference_words([r["ref"] for r in ordered], lang), "model": model, "data": str(manifest),
                   "decoding": "greedy" if beam == 1 else f"beam {beam}",
                   **({"skipped": skipped} if skipped is not None else {})}
        if info.is_main:
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def paired_change(base: list[dict], other: list[dict], lang: str = "en") -> dict:
    """`other` against `base`, utterance by utterance: rows of one eval each (`ref` or a TTS row's
    `text`, `hyp`, for TTS `failure`), the same utterances in the same order.

    The headline rate's (WER; CER for zh) change is the difference in word errors over the reference
    words, exactly the difference of the two corpus rates, with its 95% paired-bootstrap interval
    (lpo_speech.stats.paired_bootstrap: RESAMPLES resamples of the utterances at SEED) and the exact
    sign test over the utterances whose errors differ (`better`: fewer errors than the baseline,
    `worse`: more). `verdict`: "within noise" when the interval includes 0, else "better" or "worse".
    TTS rows add `failure`: the failure rate's change, its interval, the prompts that fail only here
    (`new`) and only in the baseline (`fixed`), and the sign test on those two counts."""
    if [r["id"] for r in base] != [r["id"] for r in other]:
        raise ValueError("paired_change: the two evals' rows must be the same utterances in the same order")
    rate = headline(lang)
    errs = [[utterance_errors(r["ref"] if "ref" in r else r["text"], r["hyp"], lang) for r in rows]
            for rows in (base, other)]
    b, o = ([int(e["errors"]) for e in side] for side in errs)
    words = [int(e["ref_words"]) for e in errs[0]]
    change, lo, hi = paired_bootstrap(b, o, words)
    better, worse = sum(x < y for x, y in zip(o, b)), sum(x > y for x, y in zip(o, b))
    got = {"metric": rate, f"delta_{rate}": change, "ci95": [lo, hi], "p_sign": sign_test_p(better, worse),
           "verdict": verdict(lo, hi), "errors": sum(o) - sum(b), "better": better, "worse": worse,
           "n": len(b), "words" if rate == "wer" else "chars": sum(words), "resamples": RESAMPLES, "seed": SEED}
    if base and all("failure" in r for r in (*base, *other)):
        fb, fo = [int(bool(r["failure"])) for r in base], [int(bool(r["failure"])) for r in other]
        d, flo, fhi = paired_bootstrap(fb, fo)
        new, fixed = sum(x > y for x, y in zip(fo, fb)), sum(x < y for x, y in zip(fo, fb))
        got["failure"] = {"delta": d, "ci95": [flo, fhi], "p_sign": sign_test_p(new, fixed),
                          "verdict": verdict(flo, fhi), "new": new, "fixed": fixed}
    return got


def verdict(lo: float, hi: float) -> str:
    """A change in an error rate in words: "within noise" when its interval includes 0."""
    return "within noise" if lo <= 0 <= hi else ("better" if hi < 0 else "worse")


def _utterance_rows(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def compare_models(out_dir: Path, labels: list[str], baseline: str, ids: list[str], lang: str = "en") -> dict[str, dict]:
    """Each model but `baseline` against it (paired_change), from their `<out_dir>/<label>/utterances.jsonl`
    on the utterances `ids` (the manifest's rows this eval scored, in its order)."""
    rows = {label: _utterance_rows(out_dir / label / "utterances.jsonl") for label in labels}
    base = rows[baseline]
    out = {}
    for label in labels:
        if label != baseline:
            common = [i for i in ids if i in base and i in rows[label]]
            out[label] = paired_change([base[i] for i in common], [rows[label][i] for i in common], lang)
    return out


def _tts(results: dict[str, dict]) -> bool:
    return any("failure_rate" in m for m in results.values())


def change_cell(vs: dict | None, tts: bool = False) -> str:
    """A model's paired change against the baseline in one short cell (paired_change): the difference in
    errors, in the headline rate with its 95% interval, and whether that is within noise."""
    if vs is None:
        return ""
    lo, hi = vs["ci95"]
    errors = f"{vs['errors']:+d} error{'s' if abs(vs['errors']) != 1 else ''}" if vs["errors"] else "0 errors"
    return (f"{errors}, {vs['delta_' + vs['metric']]:+.4f} [{lo:+.4f}, {hi:+.4f}]: {vs['verdict']} "
            f"({vs['n']} {'prompts' if tts else 'utterances'})")


def failure_cell(vs: dict | None) -> str:
    f = (vs or {}).get("failure")
    return "" if f is None else f"{f['delta']:+.3f} [{f['ci95'][0]:+.3f}, {f['ci95'][1]:+.3f}]"


def markdown_table(results: dict[str, dict], lang: str = "en", baseline: str | None = None) -> str:
    """The models' metrics side by side; the language's headline rate first (zh: CER, lpo_speech.wer);
    with a `baseline` whose comparisons the metrics hold (`vs_<baseline>`: paired_change), a last
    column with each model's change against it (and for TTS, its failure rate's)."""
    rates = ("cer", "wer") if headline(lang) == "cer" else ("wer", "cer")
    keys = [k for k in (*rates, "wer_utt_mean", "failure_rate", "not_terminated_rate", "sim", "dnsmos",
                        "emotion_acc", "emotion_score", "runaway_rate", "wer_no_runaway", "n", "skipped")
            if any(k in m for m in results.values())]
    vs = f"vs_{baseline}"
    compared = baseline is not None and any(vs in m for m in results.values())
    tts = _tts(results)
    extra = ([f"vs {baseline}"] + ([f"failure vs {baseline}"] if tts else [])) if compared else []
    lines = ["| model | " + " | ".join(keys + extra) + " |", "|---" * (len(keys) + len(extra) + 1) + "|"]
    for label, m in results.items():
        cells = [(f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, ""))) for k in keys]
        if compared:
            cells += (["baseline"] + (["baseline"] if tts else [])) if label == baseline else (
                [change_cell(m.get(vs), tts)] + ([failure_cell(m.get(vs))] if tts else []))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def set_line(results: dict[str, dict], data: str, name: str | None = None, lang: str = "en") -> str:
    """The set a table is about: its name, where it came from, and its size."""
    m = next(iter(results.values()), {})
    size = [f"{m['n']} {'prompts' if _tts(results) else 'utterances'}"] if "n" in m else []
    if "words" in m:
        size.append(f"{m['words']} {'words' if headline(lang) == 'wer' else 'characters'}")
    return (f"{name} (`{data}`)" if name else f"`{data}`") + (f": {', '.join(size)}" if size else "")


def legend(results: dict[str, dict], baseline: str, lang: str = "en") -> str:
    """What the `vs` cells mean, for a table whose metrics hold comparisons with `baseline`."""
    if not any(f"vs_{baseline}" in m for m in results.values()):
        return ""
    rate, items = headline(lang).upper(), "prompts" if _tts(results) else "utterances"
    unit = "word" if rate == "WER" else "character"
    return (f"`vs {baseline}`: each model against {baseline} on the same {items}: the difference in {unit} "
            f"errors, then in {rate} with its 95% paired-bootstrap interval ({RESAMPLES} resamples of the "
            f"{items}, seed {SEED}); within noise when the interval includes 0, else better or worse"
            + (" (`failure vs`: the failure rate's change, with the same interval)" if _tts(results) else "")
            + f". The sign test over the {items} that differ, and the counts: `vs_{baseline}` in metrics.json.")


def eval_table(results: dict[str, dict], lang: str, baseline: str | None, data: str, name: str | None = None) -> str:
    """The table.md of one set: the table, then the set with its size, and what the `vs` cells mean."""
    notes = [set_line(results, data, name, lang) + "."] + ([legend(results, baseline, lang)] if baseline else [])
    return markdown_table(results, lang, baseline) + "\n" + " ".join(n for n in notes if n) + "\n"


def model_labels(models: list[str], labels: list[str] | None, baseline: str | None = None) -> list[str]:
    """The models' labels in the tables (default: their folder names), checked with `baseline`."""
    labels = labels or [Path(m).name or m for m in models]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise UserError("--label: give one distinct label per --model")
    if baseline is not None and baseline not in labels:
        raise UserError(f"--baseline {baseline!r}: not one of the labels ({', '.join(labels)})")
    return labels


def evaluate(models: list[str], labels: list[str] | None, manifest: str, out: str, *, threads: int | None = None,
             overwrite: bool = False, baseline: str | None = None, set_name: str | None = None,
             **kw) -> dict[str, dict]:
    """Every model on `manifest`, side by side. `kw`: eval_asr's options (device, dtype, batch_size,
    ...); `tts`: eval_tts's own (sampling, judge_device, sampling_threads, ...); `threads`: torch CPU
    threads of each process (None: torch's default). Every model's inputs are checked, and every
    earlier output in `out` compared, before anything is written (`overwrite`: discard those made
    another way instead of stopping); a failure leaves nothing it created behind unless it holds rows.
    `skip_bad` (ASR): leave out rows whose audio cannot carry their transcript instead of stopping.
    With several models, each but `baseline` (default: the first) holds `vs_<baseline>`, its change
    against it utterance by utterance (paired_change), and the table shows it; `set_name` names the set
    in the table."""
    from lpo_speech.hub import local_model

    labels = model_labels(models, labels, baseline)
    shown = manifest  # the data as the user named it (a dataset is converted to a JSONL manifest below)
    models = [local_model(m) for m in models]  # a hub id: its snapshot in the Hugging Face cache
    out_dir = Path(out)
    tts_kw = kw.pop("tts", None) or {}  # TTS-only options (sampling, reference voice, DNSMOS, judge device)
    skip_bad = kw.pop("skip_bad", False)
    set_threads(threads)
    device = kw.get("device", "auto")
    info = init_distributed(device, where="--device")
    resolve_dtype(kw.get("dtype", "auto"), info.device, where="--dtype")
    resolve_device(tts_kw.get("judge_device") or device, where="--judge-device" if tts_kw.get("judge_device") else "--device")
    kinds = [model_kind(m) for m in models]
    cols = kw.pop("columns", None) or InputColumns()
    if "asr" not in kinds:
        if skip_bad:
            raise UserError("--skip-bad: for ASR models' manifests (audio checked against its transcript); "
                            "these models are TTS")
        return _evaluate(models, labels, kinds, manifest, out_dir, info, overwrite=overwrite, **kw, tts=tts_kw,
                         table=(baseline or labels[0], shown, set_name))
    name = row_namer(manifest, cols)  # how the audio check names a row: the source's own rows
    # A datasets dataset or a lhotse CutSet becomes a JSONL manifest in out/input/ first (asr.sources).
    with converted_manifest(manifest, out_dir / "input", cols, overwrite=overwrite, quiet=kw.get("quiet", False)) as jsonl:
        return _evaluate(models, labels, kinds, str(jsonl), out_dir, info, overwrite=overwrite, **kw, tts=tts_kw,
                         skip_bad=skip_bad, name=name, table=(baseline or labels[0], shown, set_name))


def _evaluate(models: list[str], labels: list[str], kinds: list[str], manifest: str, out_dir: Path, info, *,
              overwrite: bool, tts: dict, table: tuple[str, str, str | None], skip_bad: bool = False, name=None,
              **kw) -> dict[str, dict]:
    """`table`: the baseline label, the data as the user named it, and the set's name (or None)."""
    from lpo_speech.tts.evaluate import check_tts_eval, eval_tts  # codec-LM TTS: synthesize the prompt manifest

    tts_kw = tts
    device = kw.get("device", "auto")
    judge = tts_kw.get("judge_device")
    weights = dtype_name(resolve_dtype(kw.get("dtype", "auto"), info.device, where="--dtype"))
    judge_at = str(resolve_device(judge or device, where="--judge-device" if judge else "--device"))
    utts, checked = None, None  # an ASR manifest's rows, their audio checked once for every ASR model
    ids: dict[str, list[str]] = {}  # per kind, the rows every model of that kind scores: what pairs them
    asr = [m for m, kind in zip(models, kinds) if kind == "asr"]
    if asr:  # audio no model compared here hears whole is refused for all: every model scores the same rows
        window = min((w for w in map(model_window, asr) if w is not None), default=None)
        checked = check_asr_manifest(manifest, window=window, skip_bad=skip_bad, name=name)
        utts = checked.kept
    for model, label, kind in zip(models, labels, kinds):
        if kind == "asr":
            utts, _ = check_asr_eval(model, manifest, out_dir / label, overwrite=overwrite, utterances=utts, **kw)
            ids["asr"] = [u.id for u in utts]
        else:
            inputs = check_tts_eval(model, manifest, out_dir / label, overwrite=overwrite, **kw, **tts_kw)
            ids["tts"] = [p.id for p in inputs.prompts]
    where = dict(weights=weights, judge_device=judge_at, threads=torch.get_num_threads(),
                 sampling_threads=tts_kw.get("sampling_threads"))
    if checked is not None and info.is_main:
        announce(checked, "eval")
    record_runtime("eval", info, quiet=kw.get("quiet", False), **where)  # said now, written with the results
    with created_outputs(out_dir, *(out_dir / label for label in labels)):
        results, state_cache = {}, {}
        for model, label, kind in zip(models, labels, kinds):
            if kind == "asr":
                results[label] = eval_asr(model, manifest, out_dir / label, state_cache=state_cache,
                                          overwrite=overwrite, utterances=utts,
                                          skipped=len(checked.skipped) if skip_bad else None, **kw)
            else:
                results[label] = eval_tts(model, manifest, out_dir / label, overwrite=overwrite, **kw, **tts_kw)
        baseline, shown, set_name = table
        lang = kw.get("lang", "en")
        kind_of = dict(zip(labels, kinds))
        same = [label for label in labels if kind_of[label] == kind_of[baseline]]  # only like models pair up
        if len(same) > 1:  # every rank reads the merged rows (run_sharded), so every rank returns the same
            for label, vs in compare_models(out_dir, same, baseline, ids[kind_of[baseline]], lang).items():
                results[label][f"vs_{baseline}"] = vs
        summary = next(iter(results.values())) if len(results) == 1 else results
        if info.is_main:  # under torchrun (sharded eval) one process writes
            (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
            (out_dir / "table.md").write_text(eval_table(results, lang, baseline, shown, set_name))
        # runtime.json describes the run that made metrics.json: a failed rerun leaves the earlier one.
        record_runtime("eval", info, out_dir, quiet=True, **where)
    return results


def data_sets(specs: list[str]) -> list[tuple[str, str, bool]]:
    """`--data [NAME=]PATH` (repeatable) as (name, path, named); a name defaults to the file's stem."""
    import re

    sets = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        named = bool(sep and re.fullmatch(r"[\w.-]+", name) and path)
        if not named:
            name, path = Path(spec.rstrip("/")).name.split(".")[0] or spec, spec
        sets.append((name, path, named))
    names = [n for n, _, _ in sets]
    if len(set(names)) != len(names):
        raise UserError(f"--data: two sets named {sorted(n for n in names if names.count(n) > 1)[0]!r} "
                        "(name them: --data in-domain=test.jsonl --data out-of-domain=ood_test.jsonl)")
    return sets


def comparison_table(by_set: dict[str, dict[str, dict]], baseline: str, lang: str = "en") -> str:
    """One row per model: each set's headline rate (WER, or CER for zh) and its change against the
    baseline model on the same set, utterance by utterance with its interval (change_cell; the ratio of
    the two rates where the metrics hold no comparison), and the failure rate for TTS (with its change),
    the emotion accuracy for styled prompts, so a gain on one set bought by a loss on another
    (forgetting out of domain) shows at a glance, and so does a change within noise."""
    rate = headline(lang)
    labels = list(next(iter(by_set.values())))
    tts = any(_tts(res) for res in by_set.values())
    styled = any("emotion_acc" in m for res in by_set.values() for m in res.values())
    compared = len(labels) > 1  # one model: nothing to compare
    head = ["model"]
    for name in by_set:
        head += ([f"{name} {rate}"] + ([f"{name} vs {baseline}"] if compared else [])
                 + ([f"{name} failure"] if tts else []) + ([f"{name} emotion acc"] if styled else []))
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for label in labels:
        cells = [label]
        for name, res in by_set.items():
            m, base, vs = res[label], res[baseline], res[label].get(f"vs_{baseline}")
            if label == baseline:
                change = "baseline"
            elif vs is not None:
                change = change_cell(vs, tts)
            else:
                change = f"x{m[rate] / base[rate]:.3f}" if base.get(rate) else "n/a"
            failure = f"{m.get('failure_rate', float('nan')):.3f}"
            if failure_cell(vs):
                failure += f" ({failure_cell(vs)})"
            cells += [f"{m[rate]:.4f}"] + ([change] if compared else []) + ([failure] if tts else []) + (
                [f"{m.get('emotion_acc', float('nan')):.3f}"] if styled else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_sets(models: list[str], labels: list[str] | None, specs: list[str], out: str, *,
                  baseline: str | None = None, **kw) -> tuple[dict, str]:
    """`eval --data [NAME=]PATH ...`: every model on every set, each model but `baseline` (default: the
    first) compared with it utterance by utterance. One unnamed set (`--data PATH`) writes OUT as
    `evaluate` does: OUT/<label>/, OUT/metrics.json and OUT/table.md. A named set (`--data NAME=PATH`),
    or several sets (unnamed ones named by their file stems), write OUT/<set>/ each as `evaluate` does,
    and OUT/table.md (comparison_table, every set named with its size, then each set's own table) and
    OUT/metrics.json ({set: {label: metrics}}). Returns (results, the table to print)."""
    sets = data_sets(specs)
    lang = kw.get("lang", "en")
    labels = model_labels(models, labels, baseline)  # a wrong --baseline stops before any set is scored
    baseline = baseline or labels[0]
    if len(sets) == 1 and not sets[0][2]:
        results = evaluate(models, labels, sets[0][1], out, baseline=baseline, **kw)
        return results, eval_table(results, lang, baseline, sets[0][1])
    by_set = {name: evaluate(models, labels, path, str(Path(out) / name), baseline=baseline, set_name=name, **kw)
              for name, path, _ in sets}
    first = next(iter(by_set.values()))
    notes = ["; ".join(set_line(by_set[name], path, name, lang) for name, path, _ in sets) + ".",
             legend(first, baseline, lang)]
    parts = [comparison_table(by_set, baseline, lang), "\n" + " ".join(n for n in notes if n) + "\n"]
    parts += [f"\n{name} (`{path}`):\n\n" + markdown_table(by_set[name], lang, baseline) for name, path, _ in sets]
    if init_distributed(kw.get("device", "auto")).is_main:
        (Path(out) / "metrics.json").write_text(json.dumps(by_set, indent=2))
        (Path(out) / "table.md").write_text("".join(parts))
    return by_set, "".join(parts)
