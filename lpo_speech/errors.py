"""User-facing errors: one line saying what and where, exit status 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, recipe, manifest). The CLI prints `error: <message>` and exits 2.

    Build messages as `<where>: <what>`, e.g. `data/train.jsonl:12: field 'text': empty transcript`.
    """

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
