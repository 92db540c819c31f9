"""The pretraining corpus (`lwz.cpt.corpus`): sources tokenized once into token shards with a manifest,
bad sources as one-line errors, and a mixture's row order (shares by weight, reproducible, resumable)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from fixtures_hub import cached_hub_dataset

from lwz.cpt.corpus import MixtureOrder, tokenize_source
from lwz.cpt.packing import pack_row
from lwz.errors import LwzError


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen2)


def test_a_source_is_tokenized_once_with_end_of_document_tokens(tmp_path, tokenizer):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("One document.", "", "Another one here.")))
    shard = tokenize_source(str(source), tokenizer, tmp_path / "cache")
    eod = tokenizer.eos_token_id
    expected = [*tokenizer("One document.")["input_ids"], eod, *tokenizer("Another one here.")["input_ids"], eod]
    assert shard.tokens.tolist() == expected
    assert shard.manifest["documents"] == 2 and shard.manifest["tokens"] == len(expected)
    assert tokenize_source(str(source), tokenizer, tmp_path / "cache").folder == shard.folder  # cached
    row = pack_row(shard.row(0, 4), eod)
    assert row.tokens.tolist() == expected[:4] and row.labels.tolist() == expected[1:5]
    source.write_text(json.dumps({"text": "Changed."}) + "\n")
    assert tokenize_source(str(source), tokenizer, tmp_path / "cache").folder != shard.folder  # a new shard


def test_a_hub_name_from_the_local_cache(tmp_path, tokenizer, monkeypatch):
    texts = ["A first hub document.", "A second one."]
    source = cached_hub_dataset(monkeypatch, tmp_path / "hf", "lwz-tests/docs", [{"text": t} for t in texts])
    shard = tokenize_source(source, tokenizer, tmp_path / "cache")
    eod = tokenizer.eos_token_id
    assert shard.tokens.tolist() == [*tokenizer(texts[0])["input_ids"], eod, *tokenizer(texts[1])["input_ids"], eod]
    assert shard.manifest["documents"] == 2 and shard.manifest["source"] == source


def test_text_files_and_bad_sources(tmp_path, tokenizer):
    (tmp_path / "book.txt").write_text("A whole book in one file.\n\nChapter two.")
    assert tokenize_source(str(tmp_path / "book.txt"), tokenizer, tmp_path / "c").manifest["documents"] == 1
    with pytest.raises(LwzError, match="missing.txt: cpt.sources: not found"):
        tokenize_source(str(tmp_path / "missing.txt"), tokenizer, tmp_path / "c")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(LwzError, match=r"bad.jsonl:1: text: 'text' must be a string"):
        tokenize_source(str(tmp_path / "bad.jsonl"), tokenizer, tmp_path / "c")
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": " "}) + "\n")
    with pytest.raises(LwzError, match="empty.jsonl: cpt.sources: holds no text"):
        tokenize_source(str(tmp_path / "empty.jsonl"), tokenizer, tmp_path / "c")
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".")]  # nothing half-written


def test_a_mixture_takes_rows_by_weight_and_every_row_of_an_epoch_once():
    order = MixtureOrder([100, 40, 7], [0.6, 0.3, 0.1], seed=3)
    picks = [order[k] for k in range(200)]
    counts = Counter(c for c, _ in picks)
    assert (counts[0], counts[1], counts[2]) == (120, 60, 20)
    assert sorted([j for c, j in picks if c == 1][:40]) == list(range(40))  # epoch 0 of corpus 1: a permutation
    assert [MixtureOrder([100, 40, 7], [0.6, 0.3, 0.1], seed=3)[k] for k in (150, 3, 199)] == \
        [picks[150], picks[3], picks[199]]  # row k depends on k only: a resume reads the same rows
    assert [MixtureOrder([100, 40, 7], [0.6, 0.3, 0.1], seed=4)[k] for k in range(20)] != picks[:20]
    with pytest.raises(LwzError, match="cpt.sources.1.weight"):
        MixtureOrder([10, 10], [1.0, 0.0], seed=0)
    with pytest.raises(LwzError, match="less than one row"):
        MixtureOrder([10, 0], [1.0, 1.0], seed=0)
    assert np.isclose(sum(order.shares), 1.0)
