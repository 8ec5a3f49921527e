"""TTS fixtures: one toy offline world (piper -> Codec2) and a tiny random codec LM, shared by the session."""

from __future__ import annotations

import pytest
import torch  # noqa: F401  (before anything imports ctranslate2)


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
