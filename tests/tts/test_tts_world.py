"""The offline TTS world end to end at toy size: piper -> Codec2 -> examples, resume, ceiling, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch  # noqa: F401  (before ctranslate2)

from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair, TtsPrompt, load_jsonl
from lpo_speech.tts.text import BOS, CODEC_OFFSET, EOS, SEP, TtsTokenizer
from lpo_speech.tts.world import REF_PATH, make_tts_data, measure_ceiling, split_sentences

pytest.importorskip("pycodec2")
pytest.importorskip("piper")


@pytest.fixture
def world(tts_world):
    return tts_world


def test_splits_are_disjoint_and_stable():
    a = split_sentences(30, 5, 10, seed=0)
    assert [len(a[k]) for k in ("train", "dev", "test")] == [30, 5, 10]
    assert not set(a["train"]) & set(a["test"]) and not set(a["dev"]) & set(a["test"])
    assert split_sentences(30, 5, 10, seed=0) == a


def test_examples_are_valid_codec_lm_sft_pairs(world):
    out, stats = world
    assert stats["train"] == 3 and stats["dev"] == 1 and stats["test"] == 2
    tok = TtsTokenizer.load(out / "tokenizer.json")
    codec = tok.make_codec()
    pairs = load_jsonl(out / "train.jsonl", PreferencePair)
    prompts = load_jsonl(out / "train_prompts.jsonl", TtsPrompt)
    assert [p.id for p in pairs] == [p.id for p in prompts] == ["train-00000", "train-00001", "train-00002"]
    for pair, prompt in zip(pairs, prompts):
        assert not pair.has_rejected  # SFT example
        assert pair.prompt_tokens == tok.encode_prompt(prompt.text, emotion=prompt.emotion)
        assert prompt.emotion == pair.extra["emotion"] == "neutral"  # style_share 0
        assert pair.prompt_tokens[0] == BOS and pair.prompt_tokens[-1] == SEP
        assert pair.chosen_tokens[-1] == EOS and len(pair.chosen_tokens) % 4 == 1
        codes = codec.unflatten(tok.model_to_codec(pair.chosen_tokens[:-1]))
        # 25 frames per second of piper audio (ceil), the codec's frame rate.
        assert codes.shape[0] == int(np.ceil(pair.extra["duration_s"] * 25 - 1e-6))
        assert min(pair.chosen_tokens[:-1]) >= CODEC_OFFSET
        assert len(np.unique(codes[:, 0])) > 10  # speech, not a constant stream
    assert (out / REF_PATH).is_file() and all(p.speaker_audio == REF_PATH for p in prompts)
    assert len(list((out / "wavs" / "test").glob("*.wav"))) == 2


def test_styled_test_split_and_style_prompts(world):
    """The emotion track's held-out set: the test sentences again, styles in turn, and the same words."""
    from lpo_speech.tts.styles import PITCH_SLOT

    out, stats = world
    tok = TtsTokenizer.load(out / "tokenizer.json")
    codec = tok.make_codec()
    plain = load_jsonl(out / "test.jsonl", PreferencePair)
    styled = load_jsonl(out / "test_style.jsonl", PreferencePair)
    prompts = load_jsonl(out / "test_style_prompts.jsonl", TtsPrompt)
    assert [p.emotion for p in prompts] == ["neutral", "high"] and stats["test_style"] == 2
    assert [p.extra["text"] for p in plain] == [p.text for p in prompts]
    pitch = [codec.unflatten(tok.model_to_codec(p.chosen_tokens[:-1]))[:, PITCH_SLOT] for p in (plain[1], styled[1])]
    assert np.median(pitch[1][pitch[1] > 0]) > np.median(pitch[0][pitch[0] > 0]) + 5  # 'high' raises F0
    assert styled[1].prompt_tokens != plain[1].prompt_tokens  # the style control token differs
    style = load_jsonl(out / "style_prompts.jsonl", TtsPrompt)
    train = load_jsonl(out / "train_prompts.jsonl", TtsPrompt)
    assert [p.emotion for p in style] == ["neutral", "high", "low"] and [p.text for p in style] == [p.text for p in train]
    dev_style = load_jsonl(out / "dev_style_prompts.jsonl", TtsPrompt)
    dev = load_jsonl(out / "dev_prompts.jsonl", TtsPrompt)
    assert [p.text for p in dev_style] == [p.text for p in dev] and dev_style[0].emotion == "neutral"
    assert not {p.text for p in dev_style} & ({p.text for p in train} | {p.text for p in prompts})


def test_rerun_resumes_and_settings_are_checked(world):
    out, _ = world
    before = (out / "train.jsonl").read_text()
    lines = before.splitlines(keepends=True)
    (out / "train.jsonl").unlink()
    (out / "train.jsonl.partial").write_text(lines[0] + lines[1][:25])  # a crash: one line and a torn one
    stats = make_tts_data(out, 3, 2, n_dev=1, workers=1, ceiling=False, progress=False)
    assert stats["train"] == 2 and stats["test"] == 0  # the torn item and the missing one only
    after = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in after] == ["train-00000", "train-00001", "train-00002"]
    assert after[0] == json.loads(lines[0])
    with pytest.raises(UserError, match="was made with other settings"):
        make_tts_data(out, 4, 2, n_dev=1, workers=1, ceiling=False, progress=False)


def test_ceiling_judges_piper_and_decoded_gold(world):
    out, _ = world
    from lpo_speech.tts.scoring import TtsScorer

    c = measure_ceiling(out, limit=1, progress=False, scorer=TtsScorer(dnsmos=False, stability=False))
    for name in ("piper", "codec2-700C"):
        assert c[name]["n"] == 1 and 0 <= c[name]["wer"] <= 1 and c[name]["failure_rate"] in (0.0, 1.0)
    assert c["piper"]["wer"] <= 0.5  # piper itself is intelligible to the judge
    assert c["piper"]["sim"] > c["codec2-700C"]["sim"] - 0.05 and c["codec2-700C"]["sim"] > 0.5


def test_init_codec_lm_and_cli_error(tmp_path, lpo):
    from lpo_speech.tts.model import init_codec_lm, load_codec_lm, num_parameters

    init_codec_lm(tmp_path / "m", size="test")
    lm, tok = load_codec_lm(tmp_path / "m")
    assert tok == TtsTokenizer() and num_parameters(lm) < 100_000
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["vocab_size"] == 1360 and cfg["tts"]["codec"] == "codec2:700C"
    before = {f.name: f.read_bytes() for f in (tmp_path / "m").iterdir()}
    again = lpo("init-codec-lm", "--out", str(tmp_path / "m"), "--seed", "1", cwd=tmp_path, check=False)
    assert again.returncode == 2 and again.stderr == f"error: {tmp_path / 'm'}: exists; pass --overwrite to replace it\n"
    assert {f.name: f.read_bytes() for f in (tmp_path / "m").iterdir()} == before  # untouched
    lpo("init-codec-lm", "--out", str(tmp_path / "m"), "--seed", "1", "--size", "test", "--overwrite", cwd=tmp_path)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")) == []  # no temp folder left


def test_limits_keep_the_full_worlds_splits(world, tmp_path):
    """A demo-sized world: fewer items synthesized, the same held-out sentences as the full world."""
    out, _ = world
    stats = make_tts_data(tmp_path, 3, 2, n_dev=1, workers=1, ceiling=False, progress=False,
                          limits={"train": 1, "dev": 0, "test_style": 1})
    assert stats == {"train": 1, "test": 2, "test_style": 1, "seconds": stats["seconds"]}
    full = {p.id: p.text for p in load_jsonl(out / "test_prompts.jsonl", TtsPrompt)}
    assert {p.id: p.text for p in load_jsonl(tmp_path / "test_prompts.jsonl", TtsPrompt)} == full
    assert [p.text for p in load_jsonl(tmp_path / "train_prompts.jsonl", TtsPrompt)] == \
        [p.text for p in load_jsonl(out / "train_prompts.jsonl", TtsPrompt)][:1]
    with pytest.raises(UserError, match="--limit test_styles=1"):
        make_tts_data(tmp_path / "x", 3, 2, limits={"test_styles": 1}, workers=1, ceiling=False, progress=False)


def test_rare_styles_subset(tmp_path):
    from lpo_speech.tts.world import write_rare_styles

    rows = [{"id": f"t{i}", "emotion": e} for i, e in enumerate(["neutral", "high", "high", "low", "neutral", "high"])]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = write_rare_styles(tmp_path / "train.jsonl", tmp_path / "rare.jsonl", 1)
    kept = [json.loads(x)["id"] for x in (tmp_path / "rare.jsonl").read_text().splitlines()]
    assert kept == ["t0", "t1", "t3", "t4"] and counts == {"neutral": 2, "high": 1, "low": 1}
