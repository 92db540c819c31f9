"""The length fast path: stated counts -> [lo, hi] under the paper's annotation rules."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lwz.data.length_fast_path import MAX_WIDTH, MAX_WORDS, enforce_rules, fast_range, parse_number, stated_length

LONGBENCH = Path(__file__).resolve().parents[2] / "lwz" / "assets" / "benchmarks" / "longbench_write.jsonl"


@pytest.mark.parametrize("prompt, expected", [
    ("Write no more than 2000 words on rivers.", (1800, 2000)),
    ("Write at least 2000 words on rivers.", (2000, 2200)),
    ("An essay of about 1000 words.", (900, 1100)),
    ("An essay of 1000-1500 words.", (1000, 1500)),
    ("between 1000 and 1500 words", (1000, 1500)),
    ("The story should be at least 6,000 words long.", (6000, 6600)),
    ("Write a 1200-word report.", (1100, 1300)),
    ("Write a 12,500-word novel.", (0, 0)),
    ("Write 12000 words on Benin.", (10800, 12000)),
    ("写一篇两千字的文章", (1800, 2200)),
    ("请写三千字以上的报告", (3000, 3300)),
    ("800字左右", (700, 900)),
    ("不少于2000字", (2000, 2200)),
    ("不超过500字", (400, 500)),
    ("对于雷锋精神的推文，200字以内", (100, 200)),
    ("字数要求100至200字。", (100, 200)),
    ("300到400字", (300, 400)),
    ("写一篇1.5万字的报告", (0, 0)),
    ("两千五百字的故事", (2300, 2800)),
    ("讲稿字数1400左右。", (1300, 1500)),
    ("创作五篇日记，每篇400字左右。", (1800, 2200)),
    ("Write 3 stories, each about 500 words.", (1400, 1700)),
    ("Write a story of 3000 characters.", (500, 600)),
])  # fmt: skip
def test_stated_counts(prompt, expected):
    assert fast_range(prompt) == expected


@pytest.mark.parametrize("prompt", [
    "Write a list of 15 emojis with a line of dialogue each.",
    "出10道关于新民主主义革命的单选题",
    "Write a 50-page novel.",
    "每篇400字左右",  # per part, but how many parts?
    "Write about cats in 5 paragraphs.",
])  # fmt: skip
def test_no_stated_length_goes_to_the_llm(prompt):
    assert stated_length(prompt) is None and fast_range(prompt) is None


@pytest.mark.parametrize("text, value", [
    ("2,000", 2000), ("1.5万", 15000), ("3k", 3000), ("两千", 2000), ("三千", 3000), ("八百", 800),
    ("一万五千", 15000), ("两千五", 2500), ("十", 10), ("一百二十", 120), ("七千", 7000), ("abc", None),
])  # fmt: skip
def test_parse_number(text, value):
    assert parse_number(text) == value


@given(st.integers(-100, 30000), st.integers(-100, 30000))
def test_enforced_ranges_obey_the_rules(a, b):
    lo, hi = enforce_rules(a, b)
    assert lo % 100 == 0 and hi % 100 == 0
    assert 0 <= lo <= hi <= MAX_WORDS and hi - lo <= MAX_WIDTH
    assert (lo, hi) == (0, 0) or hi > lo


@given(st.integers(1, 30000), st.sampled_from(["{n} words", "about {n} words", "at least {n} words",
                                               "no more than {n} words", "{n}字", "{n}字左右", "不少于{n}字"]))
def test_fast_ranges_obey_the_rules_and_contain_the_count(n, form):
    lo, hi = fast_range(form.format(n=n))
    assert lo % 100 == 0 and hi % 100 == 0 and 0 <= lo <= hi <= MAX_WORDS and hi - lo <= MAX_WIDTH
    if n > MAX_WORDS and "no more" not in form:
        assert (lo, hi) == (0, 0)
    elif n >= 100 and "no more" not in form:
        assert lo <= n <= hi


def test_longbench_write_stated_lengths_recovered():
    """On LongBench-Write, the range holds the required length for >= 90% of the prompts that state one."""
    rows = [json.loads(line) for line in LONGBENCH.read_text(encoding="utf-8").splitlines()]
    stated = [(r, fast_range(r["prompt"])) for r in rows]
    stated = [(r, rng) for r, rng in stated if rng is not None]
    inside = sum(lo <= r["length"] <= hi for r, (lo, hi) in stated)
    # over 12000 words the rules ask for [0, 0]: that is the correct answer there
    by_rules = sum(lo <= r["length"] <= hi or (r["length"] > MAX_WORDS and (lo, hi) == (0, 0))
                   for r, (lo, hi) in stated)
    print(f"\nfast path: {len(stated)}/{len(rows)} prompts state a length; range holds it for "
          f"{inside}/{len(stated)} = {inside / len(stated):.1%} ({by_rules}/{len(stated)} counting [0, 0] "
          f"for requests over {MAX_WORDS} words as correct)")
    assert len(stated) >= 0.9 * len(rows)
    assert inside >= 0.9 * len(stated)
    assert by_rules == len(stated)
