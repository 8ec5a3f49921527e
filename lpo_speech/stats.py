"""Paired comparisons of two models scored on the same items: the exact sign test and a paired
bootstrap interval of a pooled rate's difference. `eval` uses them to say whether one model's WER
(and, for TTS, failure rate) differs from the baseline's beyond what resampling the test set moves it
by; the study pages use the sign test on failures prompt by prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000  # bootstrap resamples of the items: the interval's ends move by well under 0.1 of its width
SEED = 0          # a fixed seed: the same scores give the same interval on every run


def sign_test_p(a: int, b: int) -> float:
    """Exact two-sided sign test at 1/2 (McNemar's exact test on the discordant counts a and b): the
    probability, were either side equally likely, of a split at least as uneven as a : b."""
    n = a + b
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(a, b) + 1)) / 2 ** n) if n else 1.0


def paired_bootstrap(base: Sequence[float], other: Sequence[float], sizes: Sequence[float] | None = None, *,
                     resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95) -> tuple[float, float, float]:
    """The change of a pooled rate from `base` to `other`, item by item, and its percentile interval.

    Item i has `base[i]` and `other[i]` errors out of `sizes[i]` (default 1 each: a share, such as a
    failure rate). The change is (sum(other) - sum(base)) / sum(sizes): the difference of the two corpus
    rates. The interval resamples the items with replacement, the same items for both models (so what
    the two share, such as a hard utterance, cancels), `resamples` times with numpy's default generator
    at `seed`, and takes the (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled changes
    (numpy's linear interpolation). A resample whose sizes sum to 0 counts as no change. No items: (0, 0, 0).
    Returns (change, low, high)."""
    a, b = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    w = np.ones_like(a) if sizes is None else np.asarray(sizes, dtype=np.float64)
    if not (len(a) == len(b) == len(w)):
        raise ValueError(f"{len(a)} base, {len(b)} other and {len(w)} sizes: one each per item")
    n = len(a)
    if n == 0:
        return 0.0, 0.0, 0.0
    diff = b - a
    total = w.sum()
    change = float(diff.sum() / total) if total else 0.0
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    step = max(1, 1_000_000 // n)  # resamples per block: memory bounded for any test set, same draws
    for s in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(step, resamples - s), n))
        d, t = diff[idx].sum(axis=1), w[idx].sum(axis=1)
        draws[s:s + len(idx)] = np.divide(d, t, out=np.zeros_like(d), where=t > 0)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return change, float(lo), float(hi)
