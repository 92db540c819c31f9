"""Rows of a dataset source, each with where it came from: local files (JSONL/JSON, parquet, CSV), a
folder written by `datasets`' `save_to_disk`, or a `datasets` name `hf:NAME[:SPLIT]` from the local cache.

Every failure is one `LwzError` naming the source (and the key that named it); row positions are
"FILE: line N" (JSONL/JSON) or "SOURCE: row N" (the others), for messages about a bad row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lwz.errors import LwzError
from lwz.jsonl import read_objects

__all__ = ["read_rows", "HUB_PREFIX"]

HUB_PREFIX = "hf:"
_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Offline, and without `datasets`' log lines: a failure is reported as one line by the caller."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets  # noqa: F401  (its import sets its logger's level: quieten it after)

    quiet = logging.getLogger("datasets")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        quiet.setLevel(level)


def read_rows(source: str, key: str) -> Iterator[tuple[str, dict]]:
    """(where, row) for every row of `source`; `key` is the recipe key that named it (for errors)."""
    if source.startswith(HUB_PREFIX):
        name, _, split = source[len(HUB_PREFIX):].partition(":")
        yield from _dataset_rows(source, key, "the dataset",
                                 lambda datasets: datasets.load_dataset(name, split=split or "train"))
        return
    path = Path(source)
    if path.is_dir():
        yield from _dataset_rows(source, key, "the saved dataset",
                                 lambda datasets: _train_split(datasets.load_from_disk(str(path))))
        return
    kind = _FORMATS.get(path.suffix)
    if kind is None or not path.is_file():
        why = "not found" if kind else f"unsupported format (allowed: {', '.join(_FORMATS)}, a save_to_disk " \
                                       f"folder or {HUB_PREFIX}NAME[:SPLIT])"
        raise LwzError(source, key, why)
    if kind == "json":
        yield from read_objects(path)
        return
    yield from _dataset_rows(source, key, f"the {kind} file",
                             lambda datasets: datasets.load_dataset(kind, data_files=str(path), split="train"))


def _train_split(loaded):
    return loaded["train"] if hasattr(loaded, "keys") and "train" in loaded.keys() else loaded


def _dataset_rows(source: str, key: str, what: str, load) -> Iterator[tuple[str, dict]]:
    with _quiet_datasets():
        import datasets

        try:
            dataset = load(datasets)
        except Exception as e:  # datasets' errors carry long chained tracebacks
            raise LwzError(source, key, f"cannot read {what}: {type(e).__name__}") from None
    for number, row in enumerate(dataset, start=1):
        yield f"{source}: row {number}", row
