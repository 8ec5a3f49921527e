"""The offline sentence generator: deterministic, varied enough, no train/test overlap."""

from __future__ import annotations

import re

from lpo_speech.synthetic.sentences import MAX_WORDS, MIN_WORDS, generate, make_splits


def test_deterministic_per_seed():
    assert generate(50, seed=3) == generate(50, seed=3)
    assert generate(50, seed=3) != generate(50, seed=4)


def test_thousands_of_distinct_well_formed_sentences():
    sents = generate(2500, seed=0)
    assert len(set(sents)) == 2500
    for s in sents:
        assert MIN_WORDS <= len(s.split()) <= MAX_WORDS, s
        assert s[0].isupper() and s[-1] in ".?", s
        assert not re.search(r"\d|-|\ban [^aeiou]|\ba [aeio]", s), s  # no digits/hyphens, a/an right


def test_splits_share_no_sentence():
    train, test = make_splits(300, 60, seed=1)
    assert len(train) == 300 and len(test) == 60
    assert not set(train) & set(test)
    assert make_splits(300, 60, seed=1) == (train, test)
