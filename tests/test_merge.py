"""Weight averaging (lpo_speech.merge): hand-checked means on real tiny checkpoints, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lpo_speech.errors import UserError
from lpo_speech.merge import merge_models
from lpo_speech.tts.model import init_codec_lm, load_codec_lm


@pytest.fixture
def three(tmp_path):
    """Three tiny codec LMs of one architecture (different random weights stand in for three seeds)."""
    return [init_codec_lm(tmp_path / f"m{s}", size="test", seed=s) for s in range(3)]


def test_mean_of_runs_loads_and_matches_by_hand(three, tmp_path):
    out = merge_models(three, tmp_path / "soup")
    w = [load_file(str(m / "model.safetensors")) for m in three]
    merged = load_file(str(out / "model.safetensors"))
    assert merged.keys() == w[0].keys()
    for k in w[0]:
        assert torch.allclose(merged[k], (w[0][k] + w[1][k] + w[2][k]) / 3, atol=1e-6)
    emb = "model.embed_tokens.weight"
    assert not torch.equal(merged[emb], w[0][emb])  # really averaged, not copied
    lm, tok = load_codec_lm(out)  # a usable model folder: config and weights
    assert sum(p.numel() for p in lm.parameters()) > 0
    assert json.loads((out / "merge.json").read_text())["weight"] == 1.0


def test_weight_pulls_the_mean_toward_the_base(three, tmp_path):
    base, runs = three[0], three[1:]
    out = merge_models(runs, tmp_path / "half", base=base, weight=0.5)
    b, r1, r2 = (load_file(str(m / "model.safetensors")) for m in three)
    merged = load_file(str(out / "model.safetensors"))
    for k in b:  # base + 0.5 * (mean - base) = 0.5 base + 0.25 r1 + 0.25 r2
        assert torch.allclose(merged[k], 0.5 * b[k] + 0.25 * r1[k] + 0.25 * r2[k], atol=1e-6)


def test_refuses_what_cannot_be_averaged(three, tmp_path):
    other = init_codec_lm(tmp_path / "wide", size="test", hidden_size=64)
    with pytest.raises(UserError, match="config.json differs"):
        merge_models([three[0], other], tmp_path / "x")
    with pytest.raises(UserError, match="at least two"):
        merge_models([three[0]], tmp_path / "x")
    with pytest.raises(UserError, match="needs --base"):
        merge_models(three, tmp_path / "x", weight=0.5)
    (three[1] / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json: not valid JSON"):
        merge_models(three[:2], tmp_path / "x")
    (three[2] / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="unreadable"):
        merge_models([three[0], three[2]], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written
    pair = [three[0], three[0]]  # the others were corrupted above
    merge_models(pair, tmp_path / "y")
    with pytest.raises(UserError, match="exists"):
        merge_models(pair, tmp_path / "y")
    merge_models(pair, tmp_path / "y", overwrite=True)


def test_cli_merges_and_errors_in_one_line(three, tmp_path, lpo):
    ok = lpo("merge", "--model", str(three[0]), "--model", str(three[1]), "--out", str(tmp_path / "m"), cwd=tmp_path)
    assert "merged 2 models" in ok.stdout and (tmp_path / "m" / "model.safetensors").exists()
    bad = lpo("merge", "--model", str(three[0]), "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "n"),
              cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: not a model folder"]
