"""Reading JSONL files of objects, with errors that name the file and the line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lwz.errors import LwzError


def read_objects(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """("FILE:LINE", object) for each non-blank line; LwzError for a missing file, bad JSON or a non-object."""
    path = Path(path)
    if not path.is_file():
        raise LwzError(str(path), None, "no such file")
    for lineno, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LwzError(where, None, f"not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise LwzError(where, None, "each line must be a JSON object")
        yield where, row
