"""Reading JSONL files of objects, with errors that name the file and the line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lwz.errors import LwzError


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-blank line of a UTF-8 file; LwzError naming the line otherwise."""
    for lineno, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise LwzError(f"{path}:{lineno}", None, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                           f"{err.start + 1}); convert the file, e.g. iconv -f latin1 -t utf-8") from None


def read_objects(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """("FILE:LINE", object) for each non-blank line; LwzError for a missing file, bad JSON or a non-object."""
    path = Path(path)
    if not path.is_file():
        raise LwzError(str(path), None, "no such file")
    for lineno, line in text_lines(path):
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LwzError(where, None, f"not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise LwzError(where, None, "each line must be a JSON object")
        yield where, row
