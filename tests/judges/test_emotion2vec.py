"""Emotion2vecScorer on a tiny emotion2vec built offline from an inline config (no download).

The tiny model has RANDOM weights: these tests check the code path (loading, resampling, label
mapping, output shape/normalization, empty audio, thread count, errors), not emotion accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("funasr")

from lpo_speech.errors import UserError  # noqa: E402
from lpo_speech.judges.emotion import emotion_scores, make_emotion_scorer  # noqa: E402
from lpo_speech.judges.emotion2vec import Emotion2vecScorer, english_label  # noqa: E402

# The released emotion2vec+ models' label list (tokens.txt), in their order: eight bilingual labels
# and a plain "<unk>".
E2V_LABELS = ["生气/angry", "厌恶/disgusted", "恐惧/fearful", "开心/happy", "中立/neutral", "其他/other",
              "难过/sad", "吃惊/surprised", "<unk>"]
ENGLISH = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unk")

# An emotion2vec small enough to build in well under a second: 16-dim, one prenet and one main block,
# the released models' conv strides (320 samples per frame at 16 kHz) with 16 channels, ALiBi on.
# `model="Emotion2vec"` plus `model_conf` makes FunASR build it without any hub; the CharTokenizer's
# token list is the label list, and its length sizes the classification head.
TINY_EMOTION2VEC = dict(
    model_conf={
        "embed_dim": 16, "num_heads": 2, "depth": 1, "mlp_ratio": 2.0, "norm_eps": 1e-5, "norm_affine": True,
        "layer_norm_first": False, "end_of_block_targets": False, "normalize": True,
        "encoder_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "post_mlp_drop": 0.0,
        "dropout_input": 0.0, "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0,
        "modalities": {"audio": {
            "feature_encoder_spec": "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2",
            "extractor_mode": "layer_norm", "conv_pos_width": 3, "conv_pos_depth": 1, "conv_pos_groups": 2,
            "conv_pos_pre_ln": False, "prenet_depth": 1, "prenet_layerdrop": 0.0, "prenet_dropout": 0.0,
            "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0, "decoder": None,
            "use_alibi_encoder": True, "num_alibi_heads": 2, "alibi_scale": 1.0, "learned_alibi_scale": True,
            "learned_alibi_scale_per_head": True, "learned_alibi_scale_per_layer": False,
            "learned_alibi": False, "local_grad_mult": 1.0, "num_extra_tokens": 0,
            "init_extra_token_zero": True, "model_depth": 1,
        }},
    },
    tokenizer="CharTokenizer", tokenizer_conf={"token_list": E2V_LABELS, "unk_symbol": "<unk>"},
)


def test_english_label():
    assert [english_label(x) for x in E2V_LABELS] == list(ENGLISH)
    assert english_label("happy") == "happy"


def test_tiny_emotion2vec_code_path():
    import torch

    threads = torch.get_num_threads()
    scorer = make_emotion_scorer({"type": "emotion2vec", "model": "Emotion2vec", **TINY_EMOTION2VEC})
    assert isinstance(scorer, Emotion2vecScorer)
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(8000).astype(np.float32),   # 1 s at 8 kHz (resampled to 16 kHz)
            np.zeros(0, np.float32),                               # empty -> uniform row
            0.1 * rng.standard_normal(16000).astype(np.float32)]  # 2 s at 8 kHz
    probs = scorer.probabilities(wavs, 8000, ["a", "b", "c"])
    assert scorer.labels == ENGLISH
    assert probs.shape == (3, 9)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs[1], np.full(9, 1 / 9))
    # 16 kHz input, a clip shorter than the conv receptive field (zero-padded), and determinism.
    p16 = scorer.probabilities([wavs[2][:8000], wavs[2][:100]], 16000, ["", ""])
    assert p16.shape == (2, 9) and np.allclose(p16.sum(1), 1.0)
    np.testing.assert_allclose(scorer.probabilities([wavs[2][:8000]], 16000, [""]), p16[:1], atol=1e-6)
    assert torch.get_num_threads() == threads  # FunASR must not change the process's thread count

    scores = emotion_scores(scorer, [wavs[0], None], 8000, ["a", "b"], ["happy", "sad"])
    assert scores[0]["emotion_top"] in ENGLISH and 0 <= scores[0]["emotion"] <= 1
    assert scores[1] == {"emotion": 0.0, "emotion_top": None}


def test_emotion2vec_load_errors(tmp_path):
    for model in (str(tmp_path / "nonexistent"), str(tmp_path)):  # missing dir; dir without a model
        with pytest.raises(UserError, match="cannot load emotion2vec model") as e:
            Emotion2vecScorer(model).probabilities([np.zeros(16000, np.float32)], 16000, [""])
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="plain JSON"):
        Emotion2vecScorer("Emotion2vec", model_conf=object())
