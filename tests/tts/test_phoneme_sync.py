"""The phoneme-synchronous layout: gold interleaving from piper's real alignments, decoding that drops
the symbols, sampling that forces them in order, and the checks around it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch  # noqa: F401  (before ctranslate2)
from transformers import LlamaForCausalLM

from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair, TtsPrompt, load_jsonl
from lpo_speech.tts.sampling import sample
from lpo_speech.tts.text import CODEC_OFFSET, TEXT_OFFSET, TtsTokenizer
from lpo_speech.tts.text import EOS as TTS_EOS
from lpo_speech.tts.world import symbol_frames

SLOTS = [(10, 25), (25, 40), (40, 50), (50, 63)]  # vocab 64, EOS 63; ids 2..9 are the "symbols"
EOS = 63
SYMS = [[2, 3, 4], [5, 6, 7, 8, 9], [9]]
PROMPTS = [[1, 2, 3, 4, 0], [1, 5, 6, 7, 8, 9, 0], [1, 9, 0]]


@pytest.fixture(scope="module")
def sync_tok() -> TtsTokenizer:
    return TtsTokenizer(kind="phonemes", symbols=["a", "b", "c"], phoneme_sync=True)


def test_interleave_and_decode_round_trip(sync_tok):
    tok = sync_tok
    prompt = [1, TEXT_OFFSET, TEXT_OFFSET + 2, TEXT_OFFSET + 1, 3]  # BOS a c b SEP
    frames = [[CODEC_OFFSET + f, CODEC_OFFSET + 512 + f, CODEC_OFFSET + 1024 + 3, CODEC_OFFSET + 1040 + f]
              for f in range(3)]
    codec_ids = [i for fr in frames for i in fr]
    ids = tok.interleave(codec_ids, prompt, [2, 0, 1])
    assert ids == [TEXT_OFFSET, *frames[0], *frames[1], TEXT_OFFSET + 2, TEXT_OFFSET + 1, *frames[2]]
    assert tok.model_to_codec(ids) == [i - CODEC_OFFSET for i in codec_ids]
    with pytest.raises(UserError, match="phoneme symbol inside a frame"):
        tok.model_to_codec(ids[:2] + [TEXT_OFFSET] + ids[2:])
    with pytest.raises(ValueError, match="do not fit"):
        tok.interleave(codec_ids, prompt, [2, 0])
    # The plain layout treats a symbol in the response as an unknown codec token.
    with pytest.raises(UserError, match="unknown codec token"):
        TtsTokenizer(symbols=["a", "b", "c"]).model_to_codec(ids[1:5] + [TEXT_OFFSET] * 4)
    # A stored response (gold) is checked against the model's layout before a long stage uses it.
    tok.check_response(ids + [TTS_EOS], prompt, where="gold.jsonl: x")
    with pytest.raises(UserError, match="gold.jsonl: x: response does not write its prompt's phonemes"):
        tok.check_response(codec_ids + [TTS_EOS], prompt, where="gold.jsonl: x")
    with pytest.raises(UserError, match="not a whole number of 4-token frames"):  # 3 symbols + 3 frames
        TtsTokenizer(symbols=["a", "b", "c"]).check_response(ids + [TTS_EOS], prompt)


def test_table_keeps_the_flag_and_old_tables_load_plain(sync_tok, tmp_path):
    d = sync_tok.to_dict()
    assert TtsTokenizer.from_dict(d).phoneme_sync is True
    d.pop("phoneme_sync")
    assert TtsTokenizer.from_dict(d).phoneme_sync is False
    with pytest.raises(UserError, match="phoneme_sync needs phoneme prompts"):
        TtsTokenizer(kind="chars", phoneme_sync=True)


def test_symbol_frames_hand_worked():
    # 25 frames/s: ends 0.05 s, 0.05 s, 0.13 s, 0.2 s over 5 frames -> bounds 1, 1, 3, 5 (the last
    # symbol takes the rest).
    assert symbol_frames([0.05, 0.05, 0.13, 0.2], 5, 25.0) == [1, 0, 2, 2]
    assert symbol_frames([0.1, 0.09], 4, 25.0) == [2, 2]  # never backwards
    assert sum(symbol_frames([0.3, 0.5, 0.61], 20, 25.0)) == 20


@pytest.fixture(scope="module")
def lm(tiny_lm):
    return LlamaForCausalLM.from_pretrained(tiny_lm, dtype=torch.float32).eval()


class _Biased(LlamaForCausalLM):
    """The tiny Llama with constants added to some logits ({id: bias})."""

    bias: dict[int, float] = {}

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        for i, b in self.bias.items():
            out.logits[..., i] += b
        return out


def _check_sync(s, syms):
    codec_seen, got = 0, []
    for tok in s.tokens:
        if tok in range(2, 10):
            assert codec_seen % 4 == 0, "symbol inside a frame"
            got.append(tok)
        else:
            lo, hi = SLOTS[codec_seen % 4]
            assert lo <= tok < hi
            codec_seen += 1
    assert got == syms[:len(got)]
    if s.terminated:
        assert got == syms and codec_seen % 4 == 0
    return got


def test_sampling_forces_every_symbol_in_order(lm):
    out = sample(lm, PROMPTS, n=6, max_new_tokens=40, eos_id=EOS, temperature=3.0, slot_ranges=SLOTS, seed=0,
                 batch_size=7, sync=SYMS)
    flat = [(s, syms) for row, syms in zip(out, SYMS) for s in row]
    for s, syms in flat:
        _check_sync(s, syms)
    assert any(s.terminated for s, _ in flat)
    # EOS made likely at every step: rows still write all their symbols before they may stop.
    eager = _Biased(lm.config).eval()
    eager.load_state_dict(lm.state_dict())
    eager.bias = {EOS: 8.0}  # EOS likely wherever it is allowed
    out = sample(eager, PROMPTS, n=4, max_new_tokens=120, eos_id=EOS, slot_ranges=SLOTS, seed=1, sync=SYMS)
    rows = [(s, syms) for row, syms in zip(out, SYMS) for s in row]
    assert 0 < sum(s.terminated for s, _ in rows) < len(rows)
    for s, syms in rows:  # stopped exactly when the last symbol was written, never before
        assert (_check_sync(s, syms) == syms) == s.terminated
        assert not s.terminated or s.tokens[-1] == syms[-1]
    # A model that never wants to move on (symbols and EOS all but impossible) stays on its first
    # symbol to the length guard, unless a symbol may last at most 2 frames.
    stay = _Biased(lm.config).eval()
    stay.load_state_dict(lm.state_dict())
    stay.bias = {**{i: -30.0 for i in range(2, 10)}, EOS: -30.0}
    stuck = sample(stay, PROMPTS, n=2, max_new_tokens=80, eos_id=EOS, slot_ranges=SLOTS, seed=2, sync=SYMS)
    assert all(not s.terminated and _check_sync(s, syms) == syms[:1] for row, syms in zip(stuck, SYMS) for s in row)
    capped = sample(stay, PROMPTS, n=2, max_new_tokens=80, eos_id=EOS, slot_ranges=SLOTS, seed=2, sync=SYMS,
                    sync_max_frames=2)
    for row, syms in zip(capped, SYMS):
        for s in row:  # each symbol, then exactly 2 frames, then EOS
            assert s.terminated and _check_sync(s, syms) == syms and len(s.tokens) == len(syms) * 9
    with pytest.raises(ValueError, match="sync needs slot_ranges"):
        sample(lm, PROMPTS, n=1, max_new_tokens=4, eos_id=EOS, sync=SYMS)


def test_sync_world_synthesis_and_nll(tmp_path):
    """A real two-item world in the synchronous layout: gold from piper's alignments, a model made from
    it samples decodable audio with every phoneme in order, held-out NLL reports the symbols."""
    pytest.importorskip("pycodec2")
    pytest.importorskip("piper")
    pytest.importorskip("onnx")
    from lpo_speech.tts.model import heldout_nll, init_codec_lm, load_codec_lm
    from lpo_speech.tts.synthesize import synthesize
    from lpo_speech.tts.world import make_tts_data

    out = tmp_path / "world"
    make_tts_data(out, 2, 1, n_dev=0, workers=1, ceiling=False, progress=False, phoneme_sync=True)
    tok = TtsTokenizer.load(out / "tokenizer.json")
    assert tok.phoneme_sync
    for pair in load_jsonl(out / "train.jsonl", PreferencePair):
        resp = pair.chosen_tokens[:-1]
        syms = [i for i in resp if tok.is_symbol(i)]
        assert syms == tok.sync_ids(pair.prompt_tokens) and len(syms) > 20
        n_frames = len(tok.model_to_codec(resp)) // 4
        assert n_frames == pair.extra["frames"] == int(np.ceil(pair.extra["duration_s"] * 25 - 1e-6))
        runs = []  # frames per symbol: speech, so no symbol lasts a second
        for i in resp:
            if tok.is_symbol(i):
                runs.append(0)
            else:
                runs[-1] += 1
        assert max(runs) < 100 and sum(r > 0 for r in runs) > len(runs) / 2
    with pytest.raises(UserError, match="other settings"):  # the same folder as a plain world
        make_tts_data(out, 2, 1, n_dev=0, workers=1, ceiling=False, progress=False)

    model = init_codec_lm(tmp_path / "m", tok, size="test", max_positions=1024, seed=0)
    lm, tok2 = load_codec_lm(model)
    assert tok2.phoneme_sync
    prompts = load_jsonl(out / "test_prompts.jsonl", TtsPrompt)
    rows = synthesize(lm, tok2, prompts, n=3, temperature=1.0, max_seconds=1.0, seed=0, threads=1)
    for p, row in zip(prompts, rows):
        want = tok2.sync_ids(tok2.encode_prompt(p.text))
        for s in row:
            assert not s.undecodable and s.wav is not None  # a guard cut keeps whole frames
            got = [i for i in s.tokens if tok2.is_symbol(i)]
            assert got == want[:len(got)] and (got == want or not s.terminated)
    nll = heldout_nll(model, out / "train.jsonl")
    assert nll["n"] == 2 and "nll_symbols" in nll and len(nll["nll_slots"]) == 4


def test_sync_model_refuses_slot_reductions(tmp_path, sync_tok):
    from lpo_speech.adapters.causal_lm import CausalLMAdapter
    from lpo_speech.recipe import ModelConfig
    from lpo_speech.tts.model import init_codec_lm

    path = init_codec_lm(tmp_path / "m", sync_tok, size="test", max_positions=512, seed=0)
    with pytest.raises(UserError, match="use codebook_reduction flat"):
        CausalLMAdapter(ModelConfig(path=str(path), num_codebooks=4, codebook_reduction="sum")).load(
            str(path), torch.device("cpu"))
    CausalLMAdapter(ModelConfig(path=str(path), num_codebooks=4)).load(str(path), torch.device("cpu"))
    assert json.loads((path / "config.json").read_text())["tts"]["phoneme_sync"] is True


def test_demo_world_of_the_committed_sync_model(tmp_path):
    """The demo rebuilds a checkpoint's held-out world from its world.json: the committed
    phoneme-synchronous model gets a world in its own layout (its gold passes the layout check)."""
    pytest.importorskip("pycodec2")
    pytest.importorskip("onnx")
    from lpo_speech.demo import REPO, tts_world
    from lpo_speech.tts.model import load_codec_lm

    sft = REPO / "assets" / "tts-tiny-sft-sync"
    data = tts_world(tmp_path, n_prompts=1, n_test=1, sft=sft)
    assert json.loads((data / "make_tts_data.json").read_text())["phoneme_sync"] is True
    _, tok = load_codec_lm(sft)
    assert tok.phoneme_sync and tok.max_symbol_frames == 6
    (pair,) = load_jsonl(data / "train.jsonl", PreferencePair)
    tok.check_response(pair.chosen_tokens, pair.prompt_tokens, where="train.jsonl")
