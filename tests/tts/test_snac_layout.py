"""Hierarchical codec frames (SNAC, Orpheus's codec) and their log-prob reduction.

The codec is a real `snac.SNAC` with a tiny random configuration (3 levels, vq_strides [4, 2, 1] as
snac_24khz), saved as the package's `from_pretrained` reads it; the audio is real speech (espeak-ng)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import espeak_wav
from lpo_speech.errors import UserError
from lpo_speech.logps import reduce_sequences
from lpo_speech.tts.codecs import frame_order, make_codec

snac = pytest.importorskip("snac")
ORPHEUS = [(0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (2, 2), (2, 3)]


@pytest.fixture(scope="module")
def tiny_snac(tmp_path_factory) -> Path:
    cfg = dict(sampling_rate=24000, encoder_dim=8, encoder_rates=[2, 4], decoder_dim=16, decoder_rates=[4, 2],
               attn_window_size=None, codebook_size=32, codebook_dim=4, vq_strides=[4, 2, 1], noise=False)
    torch.manual_seed(0)
    model = snac.SNAC(**cfg)
    out = tmp_path_factory.mktemp("snac") / "tiny"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg))
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    return out


def test_frame_order_is_orpheus_depth_first():
    assert frame_order([4, 2, 1]) == ORPHEUS
    assert frame_order([2, 1]) == [(0, 0), (1, 0), (1, 1)]
    assert frame_order([1]) == [(0, 0)]
    with pytest.raises(UserError, match="each must divide"):
        frame_order([4, 3, 1])


def test_snac_frames_round_trip_the_models_own_codes(tiny_snac, tmp_path):
    codec = make_codec(f"snac:{tiny_snac}")
    assert codec.codebook_sizes == (32,) * 7 and codec.codebook_levels == (0, 1, 2, 2, 1, 2, 2)
    assert codec.frame_rate == pytest.approx(24000 / (8 * 4))
    wav = espeak_wav(tmp_path / "a.wav", "turn the kitchen lights off", sample_rate=24000)
    import soundfile as sf

    audio, sr = sf.read(str(wav), dtype="float32")
    codes = codec.encode(audio, sr)
    with torch.no_grad():
        own = [c[0].numpy() for c in codec.model.encode(torch.from_numpy(audio)[None, None])]
    n = own[0].shape[0]
    assert codes.shape == (n, 7) and own[1].shape[0] == 2 * n and own[2].shape[0] == 4 * n
    # Orpheus's order: c0[i], c1[2i], c2[4i], c2[4i+1], c1[2i+1], c2[4i+2], c2[4i+3]
    np.testing.assert_array_equal(codes[:, 0], own[0])
    np.testing.assert_array_equal(codes[:, [1, 4]].reshape(-1), own[1])
    np.testing.assert_array_equal(codes[:, [2, 3, 5, 6]].reshape(-1), own[2])
    with torch.no_grad():
        ref = codec.model.decode([torch.from_numpy(c)[None] for c in own]).reshape(-1).numpy()
    np.testing.assert_array_equal(codec.decode(codes), ref)
    ids = codec.flatten(codes)  # slot p's code c is p * 32 + c, as Orpheus's custom tokens
    assert all(p * 32 <= t < (p + 1) * 32 for i, t in enumerate(ids) for p in [i % 7])
    np.testing.assert_array_equal(codec.unflatten(ids), codes)


def test_snac_load_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json: not a SNAC checkpoint"):
        make_codec(f"snac:{tmp_path / 'empty'}")


def test_level_reduction_hand_worked():
    """One frame, levels 0,1,2,2,1,2,2: level means -1, (-2-4)/2 = -3, (-3-3-5-5)/4 = -4 -> -8/3."""
    tok = torch.tensor([-1.0, -2.0, -3.0, -3.0, -4.0, -5.0, -5.0])
    seq, slots = torch.zeros(7, dtype=torch.long), torch.arange(7)
    levels = (0, 1, 2, 2, 1, 2, 2)
    got, n = reduce_sequences(tok, seq, 1, average=True, slots=slots, num_codebooks=7, codebook_reduction="level",
                              slot_levels=levels)
    assert got.item() == pytest.approx(-8 / 3) and n.item() == 7
    flat, _ = reduce_sequences(tok, seq, 1, average=True, slots=slots, num_codebooks=7)
    assert flat.item() == pytest.approx(-23 / 7)
    summed, _ = reduce_sequences(tok, seq, 1, average=False, slots=slots, num_codebooks=7, codebook_reduction="level",
                                 slot_levels=levels)
    assert summed.item() == pytest.approx(-23.0)
    # Two sequences, the second cut mid-frame (no level-1 code after its first): levels present only.
    tok2 = torch.cat([tok, torch.tensor([-2.0, -6.0])])
    seq2 = torch.tensor([0] * 7 + [1, 1])
    slots2 = torch.cat([slots, torch.tensor([0, 1])])
    got2, _ = reduce_sequences(tok2, seq2, 2, average=True, slots=slots2, num_codebooks=7,
                               codebook_reduction="level", slot_levels=levels)
    assert got2.tolist() == pytest.approx([-8 / 3, (-2 - 6) / 2])


def test_level_reduction_through_the_causal_lm_adapter(tiny_lm):
    """The adapter's chosen log-prob equals a naive full-softmax computation reduced by level."""
    from lpo_speech.adapters.causal_lm import CausalLMAdapter
    from lpo_speech.recipe import ModelConfig
    from lpo_speech.records import PreferencePair

    levels = [0, 1, 2, 2, 1, 2, 2]
    cfg = ModelConfig(path=str(tiny_lm), num_codebooks=7, codebook_reduction="level", codebook_levels=levels)
    cfg.validate()
    adapter = CausalLMAdapter(cfg, average=True)
    model = adapter.load(str(tiny_lm), torch.device("cpu"))
    prompt, chosen, rejected = [5, 6, 7], [10 + i for i in range(10)], [20 + i for i in range(7)]
    item = adapter.encode(PreferencePair(id="p", prompt_tokens=prompt, chosen_tokens=chosen, rejected_tokens=rejected),
                          "test")
    with torch.no_grad():
        out = model(adapter.collate([item]))
        logits = model.lm(torch.tensor([prompt + chosen])).logits[0].log_softmax(-1)
    tok = torch.tensor([logits[len(prompt) - 1 + i, t] for i, t in enumerate(chosen)])
    by_level = {}
    for i, v in enumerate(tok.tolist()):
        by_level.setdefault(levels[i % 7], []).append(v)
    want = sum(sum(v) / len(v) for v in by_level.values()) / len(by_level)
    assert out.chosen.item() == pytest.approx(want, abs=1e-5)


def test_level_settings_are_validated():
    from conftest import REPO
    from lpo_speech.recipe import ModelConfig
    from lpo_speech.recipe import load_any_recipe

    with pytest.raises(ValueError, match="model.codebook_levels"):
        ModelConfig(path="m", num_codebooks=7, codebook_reduction="level", codebook_levels=[0, 1, 2]).validate()
    with pytest.raises(ValueError, match="only with codebook_reduction: level"):
        ModelConfig(path="m", num_codebooks=3, codebook_levels=[0, 1, 1]).validate()
    with pytest.raises(UserError, match="model.codebook_levels"):  # as a user meets it: one located line
        load_any_recipe(REPO / "recipes" / "tts" / "tiny.yaml", ["model.codebook_reduction=level"])
    recipe = load_any_recipe(REPO / "recipes" / "tts" / "tiny.yaml",
                             ["model.num_codebooks=7", "model.codebook_reduction=level",
                              "model.codebook_levels=[0, 1, 2, 2, 1, 2, 2]"])
    assert recipe.model.codebook_levels == [0, 1, 2, 2, 1, 2, 2]
