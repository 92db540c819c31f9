"""LongBench-Write length-following score (S_l), after THUDM/LongWriter `evaluation/eval_length.py`.

Required length x and produced length y are counted as LongBench-Write does (`lwz.text.count_length`:
CJK characters plus English words). Pass the answer only: strip a think segment before scoring
(`lwz.rewards.answer.extract_answer`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

from lwz.errors import LwzError
from lwz.jsonl import read_objects
from lwz.eval.plots import plot_length_scatter
from lwz.rewards.format import FormatReward
from lwz.rewards.metrics import reward_hacking_metrics
from lwz.text import count_length


def length_score(required: float, produced: float) -> float:
    """S_l in [0, 100]: 100 on target; over-long loses a third of the ratio's excess, short ones a half.

    `100*max(0, 1-(y/x-1)/3)` if y > x else `100*max(0, 1-(x/y-1)/2)`. An empty output (y == 0)
    scores 0, the limit of the formula as y -> 0.
    """
    if required <= 0:
        raise ValueError(f"required length must be positive, got {required}")
    if produced < 0:
        raise ValueError(f"produced length must be >= 0, got {produced}")
    if produced == 0:
        return 0.0
    if produced > required:
        return 100.0 * max(0.0, 1.0 - (produced / required - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (required / produced - 1.0) / 2.0)


@dataclass(frozen=True)
class LengthResult:
    """One item's score: required and produced length and S_l."""

    required: int
    produced: int
    score: float


def score_results(results: Sequence[Mapping[str, Any]]) -> list[LengthResult]:
    """Score items that carry the benchmark's `length` and the model's `response` text."""
    scored = []
    for item in results:
        produced = count_length(item["response"])
        scored.append(LengthResult(item["length"], produced, length_score(item["length"], produced)))
    return scored


def average_score(scored: Sequence[LengthResult]) -> float:
    """Mean S_l over the items (the benchmark's headline number)."""
    if not scored:
        raise ValueError("no scored items to average")
    return sum(r.score for r in scored) / len(scored)


ABOUT = 0.1   # "about N words" asks for N +- 10% (lwz/data/annotate.py's convention for a stated length)


def length_monitors(scored: Sequence[LengthResult], responses: Sequence[str], *, think: bool) -> dict[str, float]:
    """Beyond S_l: the median produced/required ratio, the share within +-10% of the requirement, and the
    training's reward-hacking monitors over the responses (`lwz.rewards.metrics`, as `hack/...`: the
    repetition of what S_l scores and the share over the format term's limits, a model looping to a length;
    answers missing; format failures)."""
    hacking = reward_hacking_metrics(responses, [{} for _ in responses], FormatReward(expect_think=think))
    return {"length_ratio_median": median(r.produced / r.required for r in scored),
            "in_range_rate": sum(abs(r.produced - r.required) <= ABOUT * r.required for r in scored) / len(scored),
            **{f"hack/{k}": v for k, v in hacking.items() if "length" not in k}}


def plot_scored(scored: Sequence[LengthResult], path: str | os.PathLike, title: str | None = None) -> None:
    """Write the log-log scatter of required vs produced length as PNG (atomic)."""
    plot_length_scatter([r.required for r in scored], [r.produced for r in scored], path, title)


_FIELDS = {"prompt": (str, "a string"), "type": (str, "a string"), "length": (int, "an integer")}


def load_longbench(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read LongBench-Write JSONL rows (`prompt`, `type`, positive int `length`); blank lines are skipped.

    A bad row raises LwzError naming the file, the line and the key.
    """
    rows = []
    for where, row in read_objects(path):
        for key, (kind, kind_name) in _FIELDS.items():
            if key not in row:
                raise LwzError(where, key, f"missing (each row needs {', '.join(_FIELDS)})")
            value = row[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise LwzError(where, key, f"must be {kind_name}, got {value!r}")
        if not row["prompt"].strip():
            raise LwzError(where, "prompt", "must not be empty")
        if row["length"] <= 0:
            raise LwzError(where, "length", f"must be a positive number of words/characters, got {row['length']}")
        rows.append(row)
    return rows
