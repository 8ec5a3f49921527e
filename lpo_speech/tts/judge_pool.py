"""The TTS judges in worker processes (`online.judge_workers: N`), for online training.

On CPU, scoring every candidate with the judges (Whisper, the speaker encoder, the style classifier:
lpo_speech.tts.scoring) is a large share of an online TTS step (benchmarks/judge_workers.py). With N > 0 the
online task starts N processes once (spawned, so each has its own torch and CTranslate2 runtime); each
builds one TtsScorer from the same settings, runs with one torch thread, and scores whole candidate
groups (one prompt's N candidates, as the in-process path scores them), so the scores are the ones the
training process would have written. Groups go to whichever worker is free; results come back in the
order they were sent. The training process waits for them: sampling stays on-policy.

A worker that cannot build its judges, or dies, stops the run with a one-line error.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from lpo_speech.errors import UserError
from lpo_speech.tts.scoring import Clip, TtsScorer

_scorer: TtsScorer | None = None  # the worker's scorer, built once by _start


def _start(settings: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)  # N workers x 1 thread: one core each, no OpenMP spinning between them
    global _scorer
    _scorer = TtsScorer(**settings)


def _score(clips: list[Clip], ref: tuple[np.ndarray, int] | None) -> list[dict[str, Any]]:
    assert _scorer is not None, "worker started without its scorer"
    return _scorer.score(clips, ref)


class JudgePool:
    """N worker processes, each with a TtsScorer(**settings)."""

    def __init__(self, settings: dict[str, Any], workers: int):
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(settings,))

    def score(self, groups: list[tuple[list[Clip], tuple[np.ndarray, int] | None]]) -> list[list[dict[str, Any]]]:
        """The scores of each (clips, reference voice) group, in order."""
        try:
            futures = [self._pool.submit(_score, clips, ref) for clips, ref in groups]
            return [f.result() for f in futures]
        except BrokenProcessPool as e:
            raise UserError(f"a judge worker process stopped ({e}); run with online.judge_workers: 0 to see "
                            "the judges' own error", where="online.judge_workers") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
