"""User-facing errors: one line that names the file, the key and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LwzError(Exception):
    """An error caused by user input; the CLI prints it as one line and exits with code 2."""

    def __init__(self, where: str | None, key: str | None, message: str):
        self.where, self.key, self.message = where, key, message
        parts = [p for p in (where, key) if p]
        super().__init__(": ".join(parts + [message]))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' did you mean X?' suffix when a choice is close to `word`, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
