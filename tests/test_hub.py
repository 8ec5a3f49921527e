"""Hub models are checked by the files their loader needs, and `eval --model HUB_ID` goes through the
Hugging Face cache. No hub is reachable here, so every test runs with ``HF_HUB_OFFLINE=1`` and a
private cache folder; "on the hub" is a tiny checkpoint saved with `save_pretrained` and laid out in
that folder exactly as `huggingface_hub` stores a download (refs/main -> snapshots/<commit>)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache: Path, repo: str, folder: Path, drop: tuple[str, ...] = ()) -> Path:
    """`folder` as the cached snapshot of hub repository `repo` (minus the files in `drop`)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    shutil.copytree(folder, snap, ignore=shutil.ignore_patterns(*drop) if drop else None)
    return snap


def offline(cache: Path, **extra: str) -> dict:
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "MODELSCOPE_CACHE": str(cache / "ms"), **extra}


def test_hub_ids_in_recipes_are_the_checked_ones():
    """Every hub id a shipped recipe loads is found, with the kind of files its loader reads."""
    from lpo_speech.hub import hub_models
    from lpo_speech.recipe import load_any_recipe

    got = {(m.field, m.name, m.kind) for r in ("asr/whisper.yaml", "asr/qwen2-audio.yaml", "tts/emotion.yaml")
           for m in hub_models(load_any_recipe(REPO / "recipes" / r))}
    assert {("model.path", "openai/whisper-small", "processor"),
            ("model.path", "Qwen/Qwen2-Audio-7B-Instruct", "processor"),
            ("build_pairs.judge.path", "openai/whisper-large-v3", "processor"),
            ("build_pairs.emotion.model", "iic/emotion2vec_plus_large", "funasr")} <= got
    assert "hf:hf-audio/xcodec2" in (REPO / "lpo_speech" / "tts" / "hub_lm.py").read_text()


def test_offline_preflight_says_which_files_are_missing(lpo, tmp_path):
    res = lpo("train", str(REPO / "recipes" / "asr" / "whisper.yaml"), cwd=tmp_path, check=False,
              env=offline(tmp_path / "hf"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "model.path: 'openai/whisper-small' is not a local folder" in res.stderr
    assert "Hugging Face cache lacks config.json, model.safetensors or" in res.stderr
    assert "preprocessor_config.json" in res.stderr
    assert "lpo-speech train recipes/asr/whisper-tiny-offline.yaml" in res.stderr  # its offline twin
    assert not (tmp_path / "runs").exists()


def test_a_cached_hub_model_passes_and_a_partial_one_names_the_missing_file(tmp_path, whisper_tiny, lpo):
    cache = tmp_path / "hf"
    put_in_cache(cache, "openai/whisper-small", whisper_tiny, drop=("processor_config.json",))
    res = lpo("train", str(REPO / "recipes" / "asr" / "whisper.yaml"), "--plan", cwd=tmp_path, check=False,
              env=offline(cache))
    assert res.returncode == 0, res.stderr  # --plan reads config.json only
    res = lpo("build-pairs", str(REPO / "recipes" / "asr" / "whisper.yaml"), cwd=tmp_path, check=False,
              env=offline(cache))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "lacks preprocessor_config.json or processor_config.json" in res.stderr
    assert "config.json," not in res.stderr  # what is there is not listed


def test_funasr_names_are_checked_in_both_caches(tmp_path, monkeypatch):
    """FunASR names map to their hub repositories by FunASR's own tables; a ModelScope copy counts."""
    from lpo_speech.hub import HubModel, funasr_repo, missing

    assert funasr_repo("paraformer-zh") == "funasr/paraformer-zh"
    assert funasr_repo("iic/emotion2vec_plus_large") == "emotion2vec/emotion2vec_plus_large"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read per call by lpo_speech.hub; the cache below is new
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    m = HubModel("build_pairs.judge.model", "paraformer-zh", "funasr")
    assert missing(m) == "the hub cannot be reached and the Hugging Face or ModelScope cache lacks config.yaml, model.pt"
    ms = tmp_path / "ms" / "models" / "iic" / "speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
    ms.mkdir(parents=True)
    (ms / "config.yaml").write_text("model: Paraformer\n")
    assert missing(m) is None


def test_eval_takes_a_hub_id_through_the_cache(tmp_path, whisper_tiny, lpo):
    """`eval --model openai/whisper-small` reaches the hub loader: offline with the model cached it
    evaluates the cached snapshot (same numbers as by path); not cached, one line and nothing written."""
    from conftest import espeak_wav

    (tmp_path / "a.wav").parent.mkdir(exist_ok=True)
    espeak_wav(tmp_path / "a.wav", "turn the kitchen lights off")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "u0", "audio": "a.wav", "text": "turn the kitchen lights off"}) + "\n")
    res = lpo("eval", "--wer", "--model", "openai/whisper-small", "--data", "m.jsonl", "--out", "ev", "--quiet",
              cwd=tmp_path, check=False, env=offline(tmp_path / "empty"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--model: 'openai/whisper-small' is not a local folder" in res.stderr and not (tmp_path / "ev").exists()

    cache = tmp_path / "hf"
    snap = put_in_cache(cache, "openai/whisper-small", whisper_tiny)
    lpo("eval", "--wer", "--model", "openai/whisper-small", "--data", "m.jsonl", "--out", "ev", "--quiet",
        cwd=tmp_path, env=offline(cache))
    lpo("eval", "--wer", "--model", str(whisper_tiny), "--data", "m.jsonl", "--out", "by-path", "--quiet",
        cwd=tmp_path, env=offline(cache))
    hub, local = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ev", "by-path"))
    assert hub["model"] == str(snap) and (tmp_path / "ev" / "whisper-small" / "utterances.jsonl").is_file()
    assert hub["wer"] == local["wer"] and hub["n"] == 1


def test_import_tts_lm_checks_hub_sources_by_their_files(tmp_path, lpo, monkeypatch):
    res = lpo("import-tts-lm", "nobody/llasa", "out", cwd=tmp_path, check=False, env=offline(tmp_path / "hf"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "the hub cannot be reached and the Hugging Face cache lacks config.json" in res.stderr
    assert "tokenizer.json or tokenizer.model or vocab.json" in res.stderr

    from lpo_speech.errors import UserError
    from lpo_speech.tts.hub_lm import codec_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="codec 'hf-audio/xcodec2' is not a local folder.*preprocessor_config.json"):
        codec_spec("hf:hf-audio/xcodec2")
    assert codec_spec("codec2:1300") == "codec2:1300"
