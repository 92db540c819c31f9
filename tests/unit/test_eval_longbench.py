"""LongBench-Write length score against hand-computed values, loading, scoring and the scatter plot."""

import json

import pytest

from lwz.errors import LwzError
from lwz.eval import benchmark_file
from lwz.eval.longbench_write import (average_score, length_monitors, length_score, load_longbench, plot_scored,
                                      score_results)


@pytest.mark.parametrize(
    ("required", "produced", "expected"),
    [
        (1000, 1000, 100.0),
        (1000, 1300, 90.0),   # 1 - 0.3/3
        (1000, 2500, 50.0),   # 1 - 1.5/3
        (1000, 4000, 0.0),    # 1 - 3/3
        (1000, 9000, 0.0),    # clipped at 0
        (1000, 800, 87.5),    # 1 - (1.25-1)/2
        (1000, 500, 50.0),    # 1 - (2-1)/2
        (900, 300, 0.0),      # 1 - (3-1)/2
        (100, 20, 0.0),       # clipped at 0
        (1000, 0, 0.0),       # empty output
    ],
)
def test_length_score_hand_values(required, produced, expected):
    assert length_score(required, produced) == pytest.approx(expected)


def test_too_long_is_punished_less_than_too_short_by_the_same_ratio():
    assert length_score(1000, 1500) > length_score(1500, 1000)


def test_length_monitors_by_hand():
    """Ratios 0.5, 1.0, 1.05 and 3.0: median 1.025, two of four within +-10%. The looping answer repeats 9
    of its 13 4-grams (over the format term's 0.4: repetitive); the response without tags is scored
    whole (its answer is all of it) and fails the think format."""
    loop = "the cat sat down " * 4
    responses = ["<think>a</think><answer>x</answer>", f"<think>plan</think><answer>{loop}</answer>",
                 "no tags at all", "<think>b</think><answer>y</answer>"]
    scored = score_results([{"length": 10, "response": "w " * 5}, {"length": 16, "response": "w " * 16},
                            {"length": 20, "response": "w " * 21}, {"length": 10, "response": "w " * 30}])
    got = length_monitors(scored, responses, think=True)
    assert got["length_ratio_median"] == pytest.approx(1.025) and got["in_range_rate"] == 0.5
    assert got["hack/ngram_repetition_rate"] == pytest.approx(9 / 13 / 4) and got["hack/repetitive_rate"] == 0.25
    assert got["hack/format_failure_rate"] == 0.25 and got["hack/answer_missing_rate"] == 0.25


def test_length_score_rejects_a_non_positive_requirement():
    with pytest.raises(ValueError, match="required length must be positive"):
        length_score(0, 10)


def test_score_results_counts_words_and_cjk_characters():
    results = [
        {"length": 4, "response": "one two three four"},
        {"length": 4, "response": "一二三四五六"},        # 6 chars: 1 - 0.5/3
        {"length": 8, "response": "alpha beta 一二"},     # 4 units: 1 - 1/2
    ]
    scored = score_results(results)
    assert [r.produced for r in scored] == [4, 6, 4]
    assert [r.score for r in scored] == pytest.approx([100.0, 100 * (1 - 0.5 / 3), 50.0])
    assert average_score(scored) == pytest.approx((100 + 100 * (1 - 0.5 / 3) + 50) / 3)


def test_shipped_benchmarks_load():
    rows = load_longbench(benchmark_file("longbench_write.jsonl"))
    assert len(rows) == 120
    assert len(load_longbench(benchmark_file("longbench_write_en.jsonl"))) == 60
    assert min(r["length"] for r in rows) == 100 and max(r["length"] for r in rows) == 20000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r":2: not valid JSON"),
        ('["a"]', r":2: each line must be a JSON object"),
        ('{"prompt": "p", "type": "t"}', r":2: length: missing"),
        ('{"prompt": "p", "type": "t", "length": "100"}', r":2: length: must be an integer, got '100'"),
        ('{"prompt": "p", "type": "t", "length": 0}', r":2: length: must be a positive"),
        ('{"prompt": " ", "type": "t", "length": 10}', r":2: prompt: must not be empty"),
    ],
)
def test_bad_rows_name_file_line_and_key(tmp_path, line, message):
    path = tmp_path / "lb.jsonl"
    path.write_text(json.dumps({"prompt": "p", "type": "t", "length": 10}) + "\n" + line + "\n")
    with pytest.raises(LwzError, match=str(path) + message):
        load_longbench(path)


def test_scatter_plot_is_a_png(tmp_path):
    scored = score_results([{"length": 100, "response": "word " * 120}, {"length": 2000, "response": ""}])
    path = tmp_path / "plots" / "lengths.png"
    plot_scored(scored, path, title="tiny")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in path.parent.iterdir()] == ["lengths.png"]  # no temporary file left behind
