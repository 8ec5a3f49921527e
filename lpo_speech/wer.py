"""Text normalization and word/character error rates: the one definition every track reports.

Scores are only comparable when everyone normalizes the same way, so this module is the
documented contract (reports and papers cite it):

English (``lang="en"``):
  * Unicode NFKC, then lowercase.
  * Punctuation is removed (replaced by a space, so ``well-known`` -> ``well known``).
  * Apostrophes inside a word are kept (``don't``, ``o'clock``; the typographic ``’`` becomes
    ``'``); quote marks at a word's edge are removed (``'hello'`` -> ``hello``).
  * Numbers are left as written (no ``3`` -> ``three``); a ``.`` or ``,`` between two digits
    stays so ``3.5`` and ``1,000`` remain one token.
  * Whitespace is collapsed to single spaces and trimmed.

Chinese / CJK (``lang="zh"``, aliases ``"cjk"``, ``"ja"``):
  * Unicode NFKC, which also folds full-width forms to half-width (``，`` -> ``,``, ``１`` -> ``1``,
    ``Ａ`` -> ``A``), so full-width and half-width text score the same.
  * ``zh`` only: traditional characters become simplified (``zhconv.convert(text, "zh-cn")``, so
    ``今天天氣`` and ``今天天气`` are the same text); ``cjk`` and ``ja`` keep characters as written.
  * Lowercase, all whitespace and punctuation removed, then one token per character (so WER and
    CER coincide: both are the character error rate, the headline rate of these languages).

Error rates (alignment by jiwer, never hand-written):
  * WER = (substitutions + deletions + insertions) / reference words, on normalized text.
  * CER = the same over characters of the normalized text (spaces count for English,
    there are none for CJK).
  * An empty normalized reference has no words to divide by: its WER/CER is defined as 0.0
    when the hypothesis is empty too, else 1.0 (and it adds 0 reference words and
    ``len(hyp words)`` errors to corpus totals). The manifest layer rejects empty
    transcripts as a UserError before they get here; this rule just keeps scoring total.
  * ``corpus_scores`` reports both corpus WER (total errors / total reference words, what
    ASR papers mean) and ``wer_utt_mean`` (mean of per-utterance WERs, the Seed-TTS-eval
    convention, which weighs a short utterance as much as a long one).
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Sequence
from functools import lru_cache

from lpo_speech.errors import UserError
from lpo_speech.optional import require

_CJK_LANGS = {"zh", "cjk", "ja"}
_EN_LANGS = {"en"}

# A '.' or ',' between digits is part of the number; mark it so punctuation removal spares it.
_NUM_SEP = re.compile(r"(?<=\d)([.,])(?=\d)")
_KEEP_DOT, _KEEP_COMMA = "\uE000", "\uE001"
# An apostrophe not between two word characters is a quote mark.
_EDGE_APOS = re.compile(r"(?<!\w)'|'(?!\w)")


def _check_lang(lang: str) -> str:
    if lang in _EN_LANGS:
        return "en"
    if lang in _CJK_LANGS:
        return "zh"
    raise UserError(f"unsupported language {lang!r} for scoring (use 'en' or 'zh')")


def headline(lang: str) -> str:
    """The error rate a language is reported by: "cer" for Chinese / CJK (characters), else "wer"."""
    return "cer" if _check_lang(lang) == "zh" else "wer"


@lru_cache(maxsize=1)
def _zhconv():
    with warnings.catch_warnings():  # zhconv imports pkg_resources, which warns on import
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        return require("zhconv", needed_for="Chinese text normalization (traditional to simplified)")


def _is_punct(ch: str) -> bool:
    # Unicode punctuation (P*) and symbols (S*: $, +, emoji...) are not words.
    return unicodedata.category(ch)[0] in "PS"


def normalize(text: str, lang: str = "en") -> str:
    """Normalize `text` as documented above; CJK output is characters joined by single spaces."""
    kind = _check_lang(lang)
    text = unicodedata.normalize("NFKC", text)
    if lang == "zh":
        text = _zhconv().convert(text, "zh-cn")
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    if kind == "zh":
        return " ".join(ch for ch in text if not ch.isspace() and not _is_punct(ch))
    text = _NUM_SEP.sub(lambda m: _KEEP_DOT if m.group(1) == "." else _KEEP_COMMA, text)
    text = _EDGE_APOS.sub(" ", text)
    text = "".join(" " if (_is_punct(ch) and ch != "'") else ch for ch in text)
    text = text.replace(_KEEP_DOT, ".").replace(_KEEP_COMMA, ",")
    return " ".join(text.split())


def _chars(normalized: str, kind: str) -> str:
    """The character sequence CER is computed on."""
    return normalized.replace(" ", "") if kind == "zh" else normalized


def utterance_errors(ref: str, hyp: str, lang: str = "en") -> dict[str, float | int]:
    """Errors of one hypothesis against its reference.

    Returns ``wer``, ``cer``, ``ref_words`` (normalized reference word count), ``errors`` (word
    substitutions + deletions + insertions), and ``ref_chars`` / ``char_errors``, the same for
    characters, so callers can pool corpus totals.
    """
    kind = _check_lang(lang)
    r, h = normalize(ref, lang), normalize(hyp, lang)
    rc, hc = _chars(r, kind), _chars(h, kind)
    if not r:  # documented rule: nothing to divide by
        rate = 0.0 if not h else 1.0
        return {"wer": rate, "cer": rate, "ref_words": 0, "errors": len(h.split()),
                "ref_chars": 0, "char_errors": len(hc)}
    if not h:  # jiwer rejects empty strings; everything was deleted
        n_words = len(r.split())
        return {"wer": 1.0, "cer": 1.0, "ref_words": n_words, "errors": n_words,
                "ref_chars": len(rc), "char_errors": len(rc)}
    # jiwer is imported here, not at the top: online training imports this module for its rewards
    # and runs where jiwer is not installed unless a reward needs an error rate.
    jiwer = require("jiwer", needed_for="word and character error rates")
    w = jiwer.process_words(r, h)
    errors = w.substitutions + w.deletions + w.insertions
    ref_words = w.hits + w.substitutions + w.deletions
    c = jiwer.process_characters(rc, hc)
    char_errors = c.substitutions + c.deletions + c.insertions
    return {"wer": errors / ref_words, "cer": char_errors / len(rc), "ref_words": ref_words,
            "errors": errors, "ref_chars": len(rc), "char_errors": char_errors}


def corpus_scores(refs: Sequence[str], hyps: Sequence[str], lang: str = "en") -> dict[str, float | int]:
    """Corpus WER/CER (pooled errors / pooled reference length) plus the per-utterance WER mean.

    Returns ``wer``, ``cer``, ``wer_utt_mean`` and ``n`` (utterances). Empty input gives zeros.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    _check_lang(lang)
    errors = words = char_errors = chars = 0
    utt_wers: list[float] = []
    for ref, hyp in zip(refs, hyps):
        u = utterance_errors(ref, hyp, lang)
        errors += int(u["errors"])
        words += int(u["ref_words"])
        utt_wers.append(float(u["wer"]))
        char_errors += int(u["char_errors"])
        chars += int(u["ref_chars"])
    n = len(utt_wers)
    return {
        "wer": errors / words if words else (0.0 if errors == 0 else 1.0),
        "cer": char_errors / chars if chars else (0.0 if char_errors == 0 else 1.0),
        "wer_utt_mean": sum(utt_wers) / n if n else 0.0,
        "n": n,
    }


def reference_words(refs: Sequence[str], lang: str = "en") -> int:
    """The words the references hold once normalized (characters for Chinese / CJK): what a corpus
    WER divides by."""
    return sum(len(normalize(ref, lang).split()) for ref in refs)
