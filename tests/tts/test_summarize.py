"""TTS corpus metrics: a judge that loops on one clip is counted, and the WER without it is given."""

from __future__ import annotations

import math

import pytest

from lpo_speech.tts.scoring import summarize


def _row(hyp: str) -> dict:
    return {"hyp": hyp, "failure": False, "terminated": True, "undecodable": False, "duration_s": 1.0}


def test_runaway_transcripts_are_counted_and_left_out_of_wer_no_runaway():
    texts = ["The red lamp.", "A big dog.", "Go home."]
    rows = [_row("the red lamp"), _row("a big cat"), _row("go home" + " la" * 10)]  # 12 words for 2
    m = summarize(rows, texts)
    assert m["wer"] == pytest.approx((0 + 1 + 10) / 8)  # the loop's 10 insertions dominate
    assert m["runaway_rate"] == pytest.approx(1 / 3)
    assert m["wer_no_runaway"] == pytest.approx(1 / 6)
    # Exactly 3x the reference's words is not yet a loop.
    m = summarize([_row("go home go home go home")], ["Go home."])
    assert m["runaway_rate"] == 0.0 and m["wer_no_runaway"] == pytest.approx(2.0)
    # Only runaways: no WER left to report.
    assert math.isnan(summarize([_row("la " * 9)], ["Go home."])["wer_no_runaway"])
