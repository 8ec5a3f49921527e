"""User-facing errors: one line saying what and where, exit status 2, no traceback."""

from __future__ import annotations

import reprlib
from typing import Any


class UserError(Exception):
    """Bad input from the user (file, recipe, manifest). The CLI prints `error: <message>` and exits 2.

    Build messages as `<where>: <what>`, e.g. `data/train.jsonl:12: field 'text': empty transcript`.
    """

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


# Bounded work: a value a user wrote (possibly megabytes of it) is never formatted in full.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 6, 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 200, 40, 100


def clip(text: str, limit: int = 160) -> str:
    """Plain text (a library's message) on one line, cut at `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "... (truncated)"


def short(value: Any, limit: int = 80) -> str:
    """A repr of `value` for an error message: at most about `limit` characters, on one line, with
    `... (truncated)` when cut. Its cost does not grow with the size of the value."""
    try:
        text = _REPR.repr(value)
    except Exception:  # e.g. an int too long to print (sys.get_int_max_str_digits)
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    if len(text) > limit:
        return text[:limit] + "... (truncated)"
    return text
