"""The CT2 -> transformers Whisper import must be lossless in behaviour, not just in shapes.

The bar: on real (espeak-ng) speech, transformers' greedy decoding of the imported checkpoint yields
exactly faster-whisper's greedy token ids from the same log-mel features, and the tokenizer agrees with
CT2's vocabulary.txt on every id. Anything less would make preference training start from a model that
is not the one faster-whisper evaluates.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

# torch before ctranslate2: the other order makes both 2-3x slower on CPU (their OpenMP runtimes clash).
import torch  # isort: skip
import ctranslate2
import librosa
import numpy as np
import pytest
import soundfile as sf
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from lpo_speech import cli
from lpo_speech.asr.ct2_import import bundled_model_dir, import_whisper_ct2, read_ct2_model_bin
from lpo_speech.errors import UserError

UTTERANCES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "The quick brown fox jumps over the lazy dog.",
    "Preference optimization makes speech models better.",
]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("whisper_hf")
    assert import_whisper_ct2(bundled_model_dir(), dst) == dst
    return dst


@pytest.fixture(scope="module")
def hf_model(imported: Path) -> WhisperForConditionalGeneration:
    return WhisperForConditionalGeneration.from_pretrained(imported).eval()


@pytest.fixture(scope="module")
def processor(imported: Path) -> WhisperProcessor:
    return WhisperProcessor.from_pretrained(imported)


@pytest.fixture(scope="module")
def fw() -> WhisperModel:
    # float32 so CT2 runs the same float16->float32 weights the import wrote.
    return WhisperModel(str(bundled_model_dir()), device="cpu", compute_type="float32", cpu_threads=2)


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory, fw: WhisperModel) -> list[np.ndarray]:
    """Log-mels exactly as faster-whisper's transcribe builds them: features first, then zero-padded to 3000."""
    assert shutil.which("espeak-ng"), "espeak-ng (Debian package) is required"
    out = []
    for i, text in enumerate(UTTERANCES):
        wav = tmp_path_factory.mktemp("espeak") / f"u{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        audio, sr = sf.read(wav, dtype="float32")
        if sr != 16000:
            audio = librosa.resample(audio, orig_sr=sr, target_sr=16000)
        out.append(pad_or_trim(fw.feature_extractor(audio)).astype(np.float32))
    return out


def faster_whisper_greedy(fw: WhisperModel, feats: np.ndarray) -> list[int]:
    """Greedy ids with the prompt and suppression faster-whisper's transcribe(beam_size=1, temperature=0,
    without_timestamps=True, condition_on_previous_text=False) passes to CTranslate2."""
    tok = Tokenizer(fw.hf_tokenizer, fw.model.is_multilingual)
    prompt = fw.get_prompt(tok, [], without_timestamps=True)
    assert prompt == [50257, 50362]  # tiny.en: <|startoftranscript|><|notimestamps|>, no language/task
    result = fw.model.generate(
        ctranslate2.StorageView.from_array(feats[None]), [prompt], beam_size=1, max_length=448,
        suppress_blank=True, suppress_tokens=list(get_suppressed_tokens(tok, [-1])),
        max_initial_timestamp_index=50,
    )[0]
    return result.sequences_ids[0]


def test_greedy_decoding_matches_faster_whisper(hf_model, processor, fw, features) -> None:
    torch.set_num_threads(2)
    for text, feats in zip(UTTERANCES, features):
        expected = faster_whisper_greedy(fw, feats)
        with torch.inference_mode():
            got = hf_model.generate(torch.from_numpy(feats[None]))[0].tolist()
        # transformers returns only the generated text tokens (no prompt, no <|endoftext|>), like CT2.
        got = [t for t in got if t < 50256]
        assert len(expected) > 3, f"{text!r}: faster-whisper produced almost nothing: {expected}"
        assert got == expected, f"{text!r}"
        assert processor.tokenizer.decode(got, skip_special_tokens=True) == fw.hf_tokenizer.decode(expected)


def test_output_projection_is_tied_and_float32(hf_model) -> None:
    lm_head, embed = hf_model.proj_out.weight, hf_model.model.decoder.embed_tokens.weight
    assert lm_head.data_ptr() == embed.data_ptr() and embed.dtype == torch.float32
    ct2, aliases = read_ct2_model_bin(bundled_model_dir() / "model.bin")
    assert aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    assert torch.equal(embed, torch.from_numpy(ct2["decoder/embeddings/weight"].astype(np.float32)))


def test_tokenizer_matches_ct2_vocabulary(processor) -> None:
    tok = processor.tokenizer
    vocab = (bundled_model_dir() / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == len(tok) == 51864
    assert tok.convert_ids_to_tokens(list(range(len(vocab)))) == vocab
    assert tok.convert_tokens_to_ids(vocab) == list(range(len(vocab)))
    assert tok.all_special_ids[-1] == tok.convert_tokens_to_ids("<|notimestamps|>") == 50362
    assert tok.convert_ids_to_tokens([50363, 51863]) == ["<|0.00|>", "<|30.00|>"]
    assert tok(" Hello world").input_ids == [50257, 50362, 18435, 995, 50256]
    assert tok.decode([50257, 50362, 50363, 18435, 995, 50364, 50256], skip_special_tokens=True) == " Hello world"
    assert processor.feature_extractor.feature_size == 80 and processor.feature_extractor.sampling_rate == 16000


def test_generation_config_is_english_only(hf_model, fw) -> None:
    gc = hf_model.generation_config
    assert gc.is_multilingual is False and getattr(gc, "lang_to_id", None) is None
    assert (gc.decoder_start_token_id, gc.eos_token_id, gc.no_timestamps_token_id) == (50257, 50256, 50362)
    tok = Tokenizer(fw.hf_tokenizer, False)
    assert sorted(gc.suppress_tokens) == list(get_suppressed_tokens(tok, [-1]))
    assert gc.begin_suppress_tokens == [220, 50256]
    assert hf_model.config.num_mel_bins == 80 and hf_model.config.encoder_attention_heads == 6


def _fake_ct2_dir(root: Path, spec: str, version: int = 6) -> Path:
    root.mkdir()
    name = spec.encode() + b"\0"
    (root / "model.bin").write_bytes(struct.pack("<IH", version, len(name)) + name + struct.pack("<III", 3, 0, 0))
    for f in ("config.json", "vocabulary.txt", "tokenizer.json"):
        (root / f).write_text("{}")
    return root


def test_bad_sources_raise_user_error(tmp_path: Path, capsys) -> None:
    dst = tmp_path / "out"
    cases = {
        tmp_path / "missing": "no such directory",
        tmp_path: "not a CTranslate2 Whisper directory (no model.bin)",
        _fake_ct2_dir(tmp_path / "spec", "TransformerSpec"): "spec TransformerSpec revision 3, want WhisperSpec",
        _fake_ct2_dir(tmp_path / "ver", "WhisperSpec", version=5): "binary version 5 not supported",
        _fake_ct2_dir(tmp_path / "empty", "WhisperSpec"): "missing decoder/embeddings/weight",
    }
    (trunc := _fake_ct2_dir(tmp_path / "trunc", "WhisperSpec")).joinpath("model.bin").write_bytes(b"\6\0\0\0\x20")
    cases[trunc] = "not a CTranslate2 model.bin"
    for src, what in cases.items():
        with pytest.raises(UserError, match=re.escape(str(src))) as err:
            import_whisper_ct2(src, dst)
        assert what in str(err.value) and "\n" not in str(err.value)
    assert not dst.exists()
    assert cli.main(["import-whisper-ct2", str(tmp_path / "missing"), str(dst)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no such directory"


def test_bundled_import_records_its_hub_origin(imported: Path) -> None:
    """The bundled CT2 copy is faster-whisper's tiny.en, converted from openai/whisper-tiny.en: the import
    says so in config.json, and the key survives a load and save_pretrained (as training saves)."""
    import json

    assert json.loads((imported / "config.json").read_text())["lpo_speech_base_model"] == "openai/whisper-tiny.en"
    cfg = WhisperForConditionalGeneration.from_pretrained(imported).config
    assert cfg.lpo_speech_base_model == "openai/whisper-tiny.en"


def test_existing_destination_is_refused_unless_overwrite(tmp_path: Path, capsys) -> None:
    """Like every command that writes a model folder: a non-empty DST stops in one line (exit 2, DST as
    it was); --overwrite replaces it whole, through a temp folder beside it."""
    dst = tmp_path / "base"
    dst.mkdir()
    (dst / "config.json").write_text("{}")
    assert cli.main(["import-whisper-ct2", "bundled", str(dst)]) == 2
    assert capsys.readouterr().err == f"error: {dst}: exists; pass --overwrite to replace it\n"
    assert [p.name for p in dst.iterdir()] == ["config.json"] and (dst / "config.json").read_text() == "{}"
    (tmp_path / "file").write_text("x")
    assert cli.main(["import-whisper-ct2", "bundled", str(tmp_path / "file"), "--overwrite"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'file'}: exists and is not a folder\n"
    assert cli.main(["import-whisper-ct2", "bundled", str(dst), "--overwrite"]) == 0
    assert "(from openai/whisper-tiny.en, recorded in its config.json)" in capsys.readouterr().out
    assert (dst / "model.safetensors").is_file() and (dst / "config.json").read_text() != "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "file"]  # no temp folder left
