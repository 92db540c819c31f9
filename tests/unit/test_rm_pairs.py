"""Preference pairs from every kind of source (`lwz.rm.data.load_pair_sources` over `lwz.data.rows`):
JSONL with the recipe's field names, parquet, a `save_to_disk` folder, a `datasets` name; bad rows are one
LwzError naming the source, row and field."""

from __future__ import annotations

import json

import pytest
from fixtures_hub import cached_hub_dataset

from lwz.errors import LwzError
from lwz.rm.data import load_pair_sources

ROWS = [{"q": f"Write about {i}.", "good": f"A clear answer about {i}.", "bad": f"answer {i} answer", "k": "x"}
        for i in range(3)]
FIELDS = dict(prompt_field="q", chosen_field="good", rejected_field="bad", kind_field="k")


def test_jsonl_with_the_recipes_field_names(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pairs = load_pair_sources([str(path)], **FIELDS)
    assert [(p.prompt, p.chosen, p.rejected, p.kind) for p in pairs] == [(r["q"], r["good"], r["bad"], "x") for r in ROWS]


def test_parquet_and_a_saved_dataset_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(ROWS).to_parquet(str(tmp_path / "pairs.parquet"))
    DatasetDict({"train": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "pairs.parquet", tmp_path / "saved"):
        assert [p.chosen for p in load_pair_sources([str(source)], **FIELDS)] == [r["good"] for r in ROWS]


def test_a_hub_name_from_the_local_cache(tmp_path, monkeypatch):
    source = cached_hub_dataset(monkeypatch, tmp_path / "hf", "lwz-tests/pairs", ROWS)
    pairs = load_pair_sources([source], **FIELDS)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(r["q"], r["good"], r["bad"]) for r in ROWS]


def test_a_hub_name_not_in_the_local_cache_is_one_line():
    with pytest.raises(LwzError) as e:
        load_pair_sources(["hf:nobody/no-such-pairs:train"])
    assert str(e.value).startswith("hf:nobody/no-such-pairs:train: rm.pairs: cannot read the dataset") \
        and "\n" not in str(e.value)


@pytest.mark.parametrize("row, fragment", [
    ({"q": "p", "bad": "b"}, "good: 'good' must be a non-empty string (set rm.chosen_field)"),
    ({"q": "p", "good": "a", "bad": "  "}, "bad: 'bad' must be a non-empty string (set rm.rejected_field)"),
    ({"q": "p", "good": "a", "bad": "a"}, "'good' and 'bad' are the same text"),
    ("[1, 2]", "must be a JSON object"),
    ("{oops", "not valid JSON"),
])
def test_bad_rows_name_the_file_line_and_field(tmp_path, row, fragment):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + (row if isinstance(row, str) else json.dumps(row)) + "\n")
    with pytest.raises(LwzError, match="pairs.jsonl:2: .*" + fragment.replace("(", r"\(").replace(")", r"\)")):
        load_pair_sources([str(path)], **FIELDS)


def test_bad_rows_of_parquet_name_the_row(tmp_path):
    from datasets import Dataset

    Dataset.from_list([*ROWS, {**ROWS[0], "good": ""}]).to_parquet(str(tmp_path / "pairs.parquet"))
    with pytest.raises(LwzError, match=r"pairs.parquet: row 4: good:"):
        load_pair_sources([str(tmp_path / "pairs.parquet")], **FIELDS)


def test_missing_and_unsupported_sources_and_too_few_pairs(tmp_path):
    with pytest.raises(LwzError, match="missing.jsonl: rm.pairs: not found"):
        load_pair_sources([str(tmp_path / "missing.jsonl")])
    (tmp_path / "pairs.txt").write_text("x")
    with pytest.raises(LwzError, match="pairs.txt: rm.pairs: unsupported format"):
        load_pair_sources([str(tmp_path / "pairs.txt")])
    (tmp_path / "one.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(LwzError, match="1 pairs: need at least 2"):
        load_pair_sources([str(tmp_path / "one.jsonl")], **FIELDS)
    with pytest.raises(LwzError, match="rm.pairs: no pair sources"):
        load_pair_sources([])
