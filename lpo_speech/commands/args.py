"""argparse value types and checks shared by the command modules: a bad flag value is one line naming
the flag (lpo_speech.cli turns argparse's errors into one line)."""

from __future__ import annotations

import argparse
import math

from lpo_speech.errors import UserError


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1)  # argparse type: a batch size, a beam width, a count of workers
non_negative_int = _int_at_least(0)


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan, inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def check_out_folder(out: str, flag: str = "--out") -> None:
    """An output folder may exist (a resumed run) but must be a folder, before any work starts."""
    from pathlib import Path

    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {out}: exists and is not a folder")
    for parent in p.parents:  # `out/sub` under a file would fail at the first mkdir
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {out}: {parent} is not a folder")
            break
