"""Natural English sentences, shipped in the package: held-out text outside the sentence grammar.

The sentences live in natural_sentences.txt beside this module (one per line, under `# topic: NAME`
lines). Why: every other sentence in this project comes from lpo_speech.synthetic.sentences, a grammar of a few
templates and word lists, so a model trained and tested on it can gain on the grammar without
gaining on English. These sentences were written by hand as ordinary prose on twenty everyday
topics (48 each): 5-20 words, US spelling, no digits (the few numbers are small and spelled out, and
clock times and years are avoided because Whisper writes those as digits, which the project's WER
normalization counts as errors), no hyphenated words, no URLs, a few common names. Every character is
a letter, a space, an apostrophe or one of . , ? ! ; : so espeak-ng and piper speak every word.

Pools (``pool(name)``): sentence ``i`` of the whole list (``SENTENCES``) goes to ``dev`` when
``i % 6 == 2``, to ``test`` when ``i % 6 == 5`` and to ``train`` otherwise, so each pool holds every
topic (8 dev, 8 test and 32 train sentences per topic: 640 / 160 / 160). The rule
depends only on a sentence's position, so the list is append-only: a sentence edited or removed in
the middle moves others between pools and changes every held-out set made from them. ``dev`` and
``test`` are held out (OOD evaluation: ``make-asr-data --ood``, make-tts-data's ``ood_*`` prompts);
only ``train`` may be mixed into training data (``--natural-share``, ``mix_natural``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from lpo_speech.errors import UserError

POOLS = ("train", "dev", "test")
MIN_WORDS, MAX_WORDS = 5, 20
# What every sentence is made of: words of letters (apostrophes inside), basic punctuation, one
# final mark. Checked by tests/synthetic/test_natural.py.
SPEAKABLE = re.compile(r"[A-Z][A-Za-z']*(?:[,;:]? [A-Za-z][A-Za-z']*)*[.?!]")


def _read_topics() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(topic, its sentences) from natural_sentences.txt, in file order."""
    from importlib.resources import files

    topics: list[tuple[str, list[str]]] = []
    text = files("lpo_speech.synthetic").joinpath("natural_sentences.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("# topic:"):
            topics.append((line.split(":", 1)[1].strip(), []))
        elif line.strip() and not line.startswith("#"):
            topics[-1][1].append(line.strip())
    return tuple((name, tuple(lines)) for name, lines in topics)


TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = _read_topics()  # (topic, sentences), in list order
SENTENCES: tuple[str, ...] = tuple(line for _, lines in TOPICS for line in lines)


def pool_of(index: int) -> str:
    """The pool of ``SENTENCES[index]`` (see the module docstring)."""
    return "dev" if index % 6 == 2 else "test" if index % 6 == 5 else "train"


def pool(name: str) -> list[str]:
    """The sentences of one pool, in list order (the same on every machine)."""
    if name not in POOLS:
        raise UserError(f"unknown natural sentence pool {name!r} (choose from {', '.join(POOLS)})")
    return [s for i, s in enumerate(SENTENCES) if pool_of(i) == name]


def held_out(name: str, seed: int) -> list[str]:
    """The ``dev`` or ``test`` pool in a seeded order (``random.Random(f"ood:{seed}:{name}")``): the
    order of every out-of-domain set made from it, so a prefix mixes all topics."""
    if name not in ("dev", "test"):
        raise UserError(f"held-out natural sentences come from the dev or test pool, not {name!r}")
    texts = pool(name)
    random.Random(f"ood:{seed}:{name}").shuffle(texts)
    return texts


def topic_of(sentence: str) -> str | None:
    """The topic block a sentence was written under (None for a sentence not in the list)."""
    for name, lines in TOPICS:
        if sentence in lines:
            return name
    return None


def check_share(share: float, what: str = "--natural-share") -> float:
    if not 0.0 <= share <= 1.0:
        raise UserError(f"{what} {share} outside [0, 1]")
    return float(share)


def mix_natural(texts: Sequence[str], ids: Sequence[str], share: float, seed: int) -> list[str]:
    """``texts`` with each item replaced, with probability ``share``, by a sentence of the ``train`` pool.

    Whether item ``ids[j]`` is replaced is drawn from ``random.Random(f"natural:{seed}:{id}")``, so the
    grammar items that stay are the items of the same id without mixing, and a prefix of ``texts``
    mixes as the prefix of the mixed list (``--limit`` keeps working). Replacements follow one seeded
    shuffle of the pool, cycling when more items are replaced than the pool holds (640 sentences):
    then natural sentences repeat in training, which is the price of a larger share."""
    check_share(share)
    if len(texts) != len(ids):
        raise ValueError(f"{len(texts)} texts for {len(ids)} ids")
    if share == 0.0:
        return list(texts)
    order = pool("train")
    random.Random(f"natural-order:{seed}").shuffle(order)
    out, k = [], 0
    for text, item_id in zip(texts, ids):
        if random.Random(f"natural:{seed}:{item_id}").random() < share:
            out.append(order[k % len(order)])
            k += 1
        else:
            out.append(text)
    return out
