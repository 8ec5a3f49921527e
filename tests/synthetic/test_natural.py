"""The natural sentences: held-out pools really held out, speakable, outside the grammar; mixing and the
TTS world's out-of-domain prompts."""

from __future__ import annotations

import json
import re

import pytest

from lpo_speech.synthetic import natural
from lpo_speech.synthetic.natural import MAX_WORDS, MIN_WORDS, POOLS, SENTENCES, SPEAKABLE, held_out, mix_natural, pool
from lpo_speech.synthetic.sentences import generate
from lpo_speech.errors import UserError
from lpo_speech.wer import normalize

# Every seed the project makes grammar data with: worlds and recipes (0), tests (1, 3, 4), the audio
# LLM's tokenizer texts (12345).
GRAMMAR_SEEDS = (0, 1, 3, 4, 12345)


def test_pools_are_large_disjoint_and_cover_the_list():
    pools = {name: pool(name) for name in POOLS}
    assert len(SENTENCES) >= 900
    assert len(pools["dev"]) >= 150 and len(pools["test"]) >= 150
    assert sum(map(len, pools.values())) == len(SENTENCES)
    norm = {name: {normalize(s) for s in p} for name, p in pools.items()}
    assert not norm["train"] & norm["dev"] and not norm["train"] & norm["test"] and not norm["dev"] & norm["test"]
    assert pool("dev") == pools["dev"]  # the same lists every call
    with pytest.raises(UserError, match="unknown natural sentence pool 'val'"):
        pool("val")


def test_no_duplicates_after_normalization():
    norm = [normalize(s) for s in SENTENCES]
    assert len(set(norm)) == len(norm), [s for s in norm if norm.count(s) > 1][:3]


def test_held_out_sentences_are_nothing_the_grammar_makes():
    held = {normalize(s) for s in pool("dev") + pool("test")}
    everything = {normalize(s) for s in SENTENCES}
    for seed in GRAMMAR_SEEDS:
        grammar = {normalize(s) for s in generate(50_000, seed)}
        assert not held & grammar, (seed, sorted(held & grammar)[:3])
        assert not everything & grammar, (seed, sorted(everything & grammar)[:3])


def test_every_sentence_is_speakable_prose():
    for s in SENTENCES:
        assert SPEAKABLE.fullmatch(s), s  # letters, apostrophes, , ; : and one final . ? !
        assert MIN_WORDS <= len(s.split()) <= MAX_WORDS, s
        assert not re.search(r"\d|-|https?|www|\.com|  ", s), s
    assert len({natural.topic_of(s) for s in SENTENCES}) == len(natural.TOPICS) >= 20
    for name in POOLS:  # every pool holds every topic
        assert {natural.topic_of(s) for s in pool(name)} == {t for t, _ in natural.TOPICS}


def test_every_sentence_encodes_as_a_phoneme_prompt():
    """The TTS prompt of each sentence (plain and phoneme-synchronous layout) has no unknown symbol and fits."""
    pytest.importorskip("piper")
    from lpo_speech.tts.text import UNK, TtsTokenizer

    for tok in (TtsTokenizer(), TtsTokenizer(phoneme_sync=True)):
        for s in SENTENCES:
            ids = tok.encode_prompt(s, emotion="low")
            assert UNK not in ids and len(ids) <= tok.max_prompt_tokens, s


def test_held_out_order_is_seeded_and_complete():
    a = held_out("test", 0)
    assert a == held_out("test", 0) and a != held_out("test", 1) and sorted(a) == sorted(pool("test"))
    with pytest.raises(UserError, match="dev or test pool"):
        held_out("train", 0)


def test_mix_natural():
    texts = generate(400, seed=0)
    ids = [f"train-{i:05d}" for i in range(len(texts))]
    assert mix_natural(texts, ids, 0.0, 0) == texts
    train = set(pool("train"))
    everything = mix_natural(texts, ids, 1.0, 0)
    assert set(everything) <= train and len(set(everything)) == 400  # no repeat before the pool runs out
    mixed = mix_natural(texts, ids, 0.25, 0)
    assert mixed == mix_natural(texts, ids, 0.25, 0)
    replaced = [m != t for m, t in zip(mixed, texts)]
    assert 60 < sum(replaced) < 140
    assert all(m in train for m, r in zip(mixed, replaced) if r)  # never a dev/test sentence
    assert mix_natural(texts[:50], ids[:50], 0.25, 0) == mixed[:50]  # prefix-stable (--limit)
    assert mix_natural(texts, ids, 0.25, 1) != mixed
    many = mix_natural(texts * 3, [f"t{i}" for i in range(1200)], 1.0, 0)
    assert set(many) == train  # more items than the pool: it cycles
    with pytest.raises(UserError, match="--natural-share 1.5 outside"):
        mix_natural(texts, ids, 1.5, 0)


def test_tts_world_writes_out_of_domain_prompts(tts_world):
    """The toy world (tests/conftest.py) carries the natural held-out prompts, every sentence encodable."""
    from lpo_speech.records import TtsPrompt, load_jsonl
    from lpo_speech.tts.text import UNK, TtsTokenizer
    from lpo_speech.tts.world import REF_PATH, STYLE_CYCLE

    out, _ = tts_world
    seed = json.loads((out / "make_tts_data.json").read_text())["seed"]
    assert "natural_share" not in json.loads((out / "make_tts_data.json").read_text())  # default: old worlds match
    tok = TtsTokenizer.load(out / "tokenizer.json")
    for name in ("dev", "test"):
        plain = load_jsonl(out / f"ood_{name}_prompts.jsonl", TtsPrompt)
        styled = load_jsonl(out / f"ood_{name}_style_prompts.jsonl", TtsPrompt)
        assert [p.text for p in plain] == [p.text for p in styled] == held_out(name, seed)
        assert [p.id for p in plain[:2]] == [f"ood_{name}-00000", f"ood_{name}-00001"]
        assert [p.id for p in styled[:1]] == [f"ood_{name}_style-00000"]
        assert {p.emotion for p in plain} == {"neutral"}
        assert [p.emotion for p in styled] == [STYLE_CYCLE[i % 3] for i in range(len(styled))]
        assert {p.speaker_audio for p in plain + styled} == {REF_PATH}
        assert UNK not in tok.encode_prompt(styled[1].text, emotion=styled[1].emotion)
    grammar = {p.text for f in ("train", "dev", "test") for p in load_jsonl(out / f"{f}_prompts.jsonl", TtsPrompt)}
    assert not grammar & set(SENTENCES)


def test_tts_world_natural_share(tmp_path):
    pytest.importorskip("pycodec2")
    pytest.importorskip("piper")
    import torch  # noqa: F401  (before ctranslate2)

    from lpo_speech.records import TtsPrompt, load_jsonl
    from lpo_speech.tts.world import make_tts_data, split_sentences

    out = tmp_path / "world"
    make_tts_data(out, 2, 1, n_dev=0, workers=1, ceiling=False, progress=False, natural_share=1.0,
                  limits={"test_style": 0})
    train = [p.text for p in load_jsonl(out / "train_prompts.jsonl", TtsPrompt)]
    assert set(train) <= set(pool("train")) and len(set(train)) == 2
    assert [p.text for p in load_jsonl(out / "test_prompts.jsonl", TtsPrompt)] == split_sentences(2, 0, 1, 0)["test"]
    assert [p.text for p in load_jsonl(out / "style_prompts.jsonl", TtsPrompt)] == train
    assert json.loads((out / "make_tts_data.json").read_text())["natural_share"] == 1.0
    with pytest.raises(UserError, match="other settings"):
        make_tts_data(out, 2, 1, n_dev=0, workers=1, ceiling=False, progress=False, limits={"test_style": 0})
