"""The shipped training prompts: none is a benchmark prompt or nearly one, and every row loads.

Near-equality: the same text after lower-casing and collapsing non-word characters, a shared run of
8 words (English) or 12 characters (Chinese), or a difflib similarity ratio of 0.8 or more.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from lwz.data.prompts import load_prompts

ROOT = Path(__file__).resolve().parents[2]
TRAINING = sorted((ROOT / "recipes" / "data").glob("*.jsonl")) + sorted((ROOT / "lwz" / "assets" / "rm").glob("*.jsonl"))
BENCHMARKS = sorted((ROOT / "lwz" / "assets" / "benchmarks").glob("*.jsonl")) + \
    sorted((ROOT / "experiments" / "data").glob("*.jsonl"))


def texts(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [row.get("prompt") or row.get("query") for row in rows]
    return list(dict.fromkeys(texts + [row["chosen"] for row in rows if "chosen" in row]))  # pairs: answers too


def normal(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def shingles(text: str) -> set[str]:
    """8-word runs of the English words and 12-character runs of the CJK text."""
    words = normal(text).split()
    cjk = "".join(re.findall(r"[\u4e00-\u9fff]", text))
    return ({" ".join(words[i:i + 8]) for i in range(len(words) - 7)}
            | {cjk[i:i + 12] for i in range(len(cjk) - 11)})


def test_training_files_are_the_new_prompts():
    assert {p.name for p in TRAINING} == {"lwz_prompts.jsonl", "lwz_prompts_source.jsonl", "short_prompts_en.jsonl",
                                         "writing_pairs.jsonl"}


@pytest.mark.parametrize("training", TRAINING, ids=[p.name for p in TRAINING])
def test_no_training_prompt_is_a_benchmark_prompt(training: Path):
    bench = [(path.name, text) for path in BENCHMARKS for text in texts(path)]
    assert len(bench) > 250 and all(bench_text for _, bench_text in bench)
    bench_shingles = {s: name for name, text in bench for s in shingles(text)}
    bench_normal = {normal(text): name for name, text in bench}
    for prompt in texts(training):
        assert normal(prompt) not in bench_normal, prompt
        shared = shingles(prompt) & bench_shingles.keys()
        assert not shared, (prompt, [bench_shingles[s] for s in shared])
        close = difflib.get_close_matches(normal(prompt), list(bench_normal), n=1, cutoff=0.8)
        assert not close, (prompt, close)


def test_rl_prompts_cover_the_domains_and_languages():
    rows = [json.loads(line) for line in (ROOT / "recipes" / "data" / "lwz_prompts.jsonl").read_text().splitlines()]
    domains, langs = Counter(r["domain"] for r in rows), Counter(r["lang"] for r in rows)
    assert len(rows) >= 300 and len(domains) == 6 and min(domains.values()) >= 50
    assert langs["en"] >= 150 and langs["zh"] >= 100
    sources = Counter(r["length_range_source"].split(":")[0] for r in rows)
    assert sources["fast"] == sum(r["stated"] for r in rows) >= 60 and sources["rule"] == len(rows) - sources["fast"]
    assert len({normal(r["prompt"]) for r in rows}) == len(rows)


@pytest.mark.parametrize("name", ["lwz_prompts.jsonl", "short_prompts_en.jsonl"])
def test_training_files_load_with_their_ranges(name: str):
    rows = load_prompts([str(ROOT / "recipes" / "data" / name)], l_max=20000)
    assert all(0 < lo <= hi or lo == hi == 0 for lo, hi in (r["length_range"] for r in rows))
