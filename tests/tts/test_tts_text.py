"""Prompt tokens and the vocabulary layout (real piper/espeak phonemizer, no mocks)."""

from __future__ import annotations

import json

import pytest
import torch  # noqa: F401  (before anything that may import ctranslate2)

from lpo_speech.errors import UserError
from lpo_speech.tts.text import (BOS, CODEC_OFFSET, CONTROL_OFFSET, EOS, SEP, TEXT_OFFSET, UNK, TtsTokenizer)


@pytest.fixture(scope="module")
def tok() -> TtsTokenizer:
    return TtsTokenizer()


def test_layout_matches_codec2_700c(tok):
    assert len(tok.symbols) == 148 and tok.symbols[0] == " " and "ə" in tok.symbols
    assert tok.vocab_size == CODEC_OFFSET + 1104 == 1360
    assert tok.slot_ranges == [(256, 768), (768, 1280), (1280, 1296), (1296, 1360)]
    codec = tok.make_codec()
    assert [(lo + CODEC_OFFSET, hi + CODEC_OFFSET) for lo, hi in codec.slot_ranges] == tok.slot_ranges
    assert len({BOS, EOS, SEP, UNK}) == 4 and max(BOS, EOS, SEP, UNK) < CONTROL_OFFSET


def test_phoneme_prompt(tok):
    ids = tok.encode_prompt("The red lamp is broken.")
    assert ids[0] == BOS and ids[-1] == SEP
    assert all(TEXT_OFFSET <= i < CODEC_OFFSET for i in ids[1:-1])
    assert tok.decode_prompt(ids) == "ðə ɹˈɛd lˈæmp ɪz bɹˈoʊkən."
    # Same text, same ids (the table is fixed); different text, different ids.
    assert tok.encode_prompt("The red lamp is broken.") == ids != tok.encode_prompt("The red lamp is open.")


def test_controls(tok):
    ids = tok.encode_prompt("Hello there.", emotion="Happy", intensity=0.9, speaker=1)
    assert ids[1:4] == [CONTROL_OFFSET + tok.controls.index(c)
                        for c in ("emotion:happy", "intensity:high", "speaker:1")]
    assert tok.decode_prompt(ids).startswith("<emotion:happy><intensity:high><speaker:1>")
    with pytest.raises(UserError, match=r"unknown emotion 'bored' \(known: neutral, happy"):
        tok.encode_prompt("Hello.", emotion="bored")
    with pytest.raises(UserError, match="intensity 1.5 outside"):
        tok.encode_prompt("Hello.", intensity=1.5)


def test_empty_and_overlong_are_one_line_errors(tok):
    for text in ("", "   \n"):
        with pytest.raises(UserError, match="empty text") as e:
            tok.encode_prompt(text, where="prompts.jsonl:3")
        assert "\n" not in str(e.value) and str(e.value).startswith("prompts.jsonl:3:")
    short = TtsTokenizer(max_prompt_tokens=20)
    with pytest.raises(UserError, match=r"prompt is \d+ tokens, longer than the model's max_prompt_tokens=20"):
        short.encode_prompt("My brother bought a heavy wooden chair at the market yesterday.")


def test_chars_kind_and_unknown_symbols():
    chars = TtsTokenizer(kind="chars")
    ids = chars.encode_prompt("Hi,  Émma!")
    assert chars.decode_prompt(ids) == "hi, <unk>mma!" and ids.count(UNK) == 1
    with pytest.raises(UserError, match="no known chars symbols"):
        chars.encode_prompt("日本")


def test_codec_ids_round_trip_and_unknown_token(tok):
    flat = [0, 512, 1024, 1040, 511, 1023, 1039, 1103]
    ids = tok.codec_to_model(flat)
    assert tok.model_to_codec(ids) == flat
    with pytest.raises(UserError, match=r"unknown codec token 300 at position 1 \(slot 1 expects ids \[768, 1280\)\)"):
        tok.model_to_codec([256, 300, 1280, 1296])
    with pytest.raises(UserError, match="not a whole number of 4-token frames"):
        tok.model_to_codec(ids[:3])
    with pytest.raises(UserError, match="unknown codec token 2 at position 0"):
        tok.model_to_codec([EOS, 768, 1280, 1296])


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "t.json")
    again = TtsTokenizer.load(tmp_path / "t.json")
    assert again == tok and again.encode_prompt("A cup.") == tok.encode_prompt("A cup.")
    d = json.loads((tmp_path / "t.json").read_text())
    d["layout"]["codec_offset"] = 300
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="token layout"):
        TtsTokenizer.load(tmp_path / "bad.json")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no 'tts' table"):
        TtsTokenizer.load(tmp_path / "cfg")


def test_style_labels_map_to_style_controls(tok):
    high = tok.encode_prompt("hello there", emotion="high")
    assert high[1] == CONTROL_OFFSET + tok.controls.index("style:high")
    assert tok.encode_prompt("hello there", emotion="Neutral")[1] == CONTROL_OFFSET + tok.controls.index("emotion:neutral")
    with pytest.raises(UserError, match=r"unknown emotion 'loud' \(known: .*happy.*high, low\)"):
        tok.encode_prompt("hello there", emotion="loud")
