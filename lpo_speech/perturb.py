"""Perturbation-based rejected transcripts: the reference corrupted by edits (the LPO paper's best
ASR setting). English edits whole words; Chinese (and other CJK) edits characters.

Substituted and inserted units come from a vocabulary of the training references, so a corrupted
transcript stays plausible-looking text rather than noise.
"""

from __future__ import annotations

import random
from collections import Counter

from lpo_speech.wer import normalize

OPS = ("substitute", "delete", "insert")


def units(text: str, lang: str) -> list[str]:
    return list(text.replace(" ", "")) if lang == "zh" else text.split()


def join(parts: list[str], lang: str) -> str:
    return "".join(parts) if lang == "zh" else " ".join(parts)


def build_vocabulary(texts: list[str], lang: str = "en") -> list[str]:
    """Units of the (normalized) references, most frequent first."""
    counts = Counter(u for t in texts for u in units(normalize(t, lang), lang))
    return [u for u, _ in counts.most_common()]


def perturb(text: str, vocabulary: list[str], rng: random.Random, *, rate: float, lang: str = "en") -> str:
    """Apply max(1, round(rate * n)) random edits (substitution, deletion, insertion) to `text`."""
    parts = units(text, lang)
    n_edits = max(1, round(rate * max(1, len(parts))))
    for _ in range(n_edits):
        op = rng.choice(OPS) if parts else "insert"
        if op == "delete" and len(parts) > 1:
            del parts[rng.randrange(len(parts))]
        elif op == "substitute" or (op == "delete" and len(parts) <= 1):
            i = rng.randrange(len(parts))
            choices = [v for v in rng.sample(vocabulary, min(8, len(vocabulary))) if v.lower() != parts[i].lower()]
            if choices:
                parts[i] = choices[0]
        else:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(vocabulary))
    return join(parts, lang)


def perturbations(text: str, vocabulary: list[str], *, n: int, rate: float, seed: int | str,
                  lang: str = "en", max_tries: int = 4) -> list[str]:
    """Up to n distinct corruptions of `text` that differ from it after normalization."""
    rng = random.Random(f"perturb:{seed}")
    seen = {normalize(text, lang)}
    out: list[str] = []
    for _ in range(n * max_tries):
        if len(out) == n:
            break
        cand = perturb(text, vocabulary, rng, rate=rate, lang=lang)
        key = normalize(cand, lang)
        if key and key not in seen:
            seen.add(key)
            out.append(cand)
    return out
