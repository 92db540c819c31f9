"""A pretraining corpus tokenized once into a token shard, and the reproducible order of a mixture's rows.

Each source (a .txt file is one document; JSONL/parquet/CSV rows, `save_to_disk` folders and
hf:NAME[:SPLIT] give one document per row's `text_field`, `lwz.data.rows`) is tokenized into
`CACHE/<key>/tokens.u32` (the documents' tokens, each followed by the end-of-document token, as one
little-endian uint32 stream read back by numpy memmap) with `manifest.json` (the source, its size and
modification time, the tokenizer, counts). The key hashes what the shard depends on, so a changed file
or tokenizer makes a new shard; a shard appears atomically (written under a temporary name, renamed).

`MixtureOrder` says which corpus and which of its rows the k-th training row is: each corpus gets rows in
proportion to its weight (the one furthest behind its share goes next, as megatron's blended datasets
do), and each corpus walks through its rows in a seeded permutation per epoch. Row k depends on k
only, so a resumed run reads the rows the uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lwz.atomic import new_folder
from lwz.data.rows import read_rows
from lwz.errors import LwzError

__all__ = ["TokenShard", "tokenize_source", "MixtureOrder"]

SHARD_VERSION = 1
TOKENS = "tokens.u32"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TokenShard:
    """A tokenized source: its token stream (memmap) and manifest."""

    folder: Path
    manifest: dict

    @property
    def tokens(self) -> np.ndarray:
        return np.memmap(self.folder / TOKENS, dtype="<u4", mode="r")

    def rows(self, seq_length: int) -> int:
        """Rows of `seq_length` inputs (+ 1 label) the stream holds."""
        return max(0, (self.manifest["tokens"] - 1) // seq_length)

    def row(self, index: int, seq_length: int) -> np.ndarray:
        """The `seq_length + 1` stream tokens of row `index`."""
        start = index * seq_length
        return np.asarray(self.tokens[start:start + seq_length + 1], dtype=np.int64)


def _identity(source: str) -> dict:
    path = Path(source)
    if path.is_file():
        stat = path.stat()
        return {"source": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"source": source}


def _documents(source: str, text_field: str, key: str):
    path = Path(source)
    if path.suffix == ".txt":
        if not path.is_file():
            raise LwzError(source, key, "not found")
        yield f"{source}", path.read_text(encoding="utf-8")
        return
    for where, row in read_rows(source, key):
        text = row.get(text_field)
        if not isinstance(text, str):
            raise LwzError(where, text_field, f"{text_field!r} must be a string (set the source's text_field)")
        yield where, text


def tokenize_source(source: str, tokenizer, cache: str | os.PathLike, *, text_field: str = "text",
                    key: str = "cpt.sources") -> TokenShard:
    """The token shard of `source` under `cache`, tokenized now unless an identical one exists."""
    eod = tokenizer.eos_token_id
    if eod is None:
        raise LwzError(None, "model.tokenizer", "the tokenizer has no end-of-document (eos) token")
    identity = {**_identity(source), "text_field": text_field, "tokenizer": tokenizer.name_or_path,
                "vocab": len(tokenizer), "eod": eod, "version": SHARD_VERSION}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache) / digest
    if (folder / MANIFEST).is_file():
        return TokenShard(folder, json.loads((folder / MANIFEST).read_text()))
    with new_folder(folder, if_there="keep") as tmp:   # another process may make it first
        documents = tokens = 0
        with open(tmp / TOKENS, "wb") as out:
            for _, text in _documents(source, text_field, key):
                if not text.strip():
                    continue
                ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eod]
                out.write(np.asarray(ids, dtype="<u4").tobytes())
                documents, tokens = documents + 1, tokens + len(ids)
        if documents == 0:
            raise LwzError(source, key, "holds no text")
        manifest = {**identity, "documents": documents, "tokens": tokens}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return TokenShard(folder, json.loads((folder / MANIFEST).read_text()))


class MixtureOrder:
    """Row k of a weighted mixture of corpora: (corpus index, row index in that corpus)."""

    def __init__(self, rows: Sequence[int], weights: Sequence[float], seed: int):
        if not rows or len(rows) != len(weights):
            raise LwzError(None, "cpt.sources", "a mixture needs one weight per source")
        for i, (n, w) in enumerate(zip(rows, weights)):
            if w <= 0:
                raise LwzError(None, f"cpt.sources.{i}.weight", f"{w} is invalid: need > 0")
            if n < 1:
                raise LwzError(None, f"cpt.sources.{i}", "holds less than one row of cpt.seq_length tokens")
        total = sum(weights)
        self.rows, self.shares, self.seed = list(rows), [w / total for w in weights], seed
        self._counts = [0] * len(rows)
        self._taken: list[tuple[int, int]] = []
        self._orders: dict[int, tuple[int, np.ndarray]] = {}

    def __getitem__(self, k: int) -> tuple[int, int]:
        while len(self._taken) <= k:  # the corpus furthest behind its share takes the next row
            n = len(self._taken) + 1
            corpus = max(range(len(self.rows)), key=lambda c: (self.shares[c] * n - self._counts[c], -c))
            self._taken.append((corpus, self._counts[corpus]))
            self._counts[corpus] += 1
        corpus, j = self._taken[k]
        epoch, offset = divmod(j, self.rows[corpus])
        if self._orders.get(corpus, (None,))[0] != epoch:  # one epoch's permutation kept per corpus
            generator = np.random.default_rng([self.seed, corpus, epoch])
            self._orders[corpus] = (epoch, generator.permutation(self.rows[corpus]))
        return corpus, int(self._orders[corpus][1][offset])
