"""Reward-hacking metrics of a batch of responses, for logging (PAPER.md, "Reward hacking").

Keys of the returned flat dict (means over the responses named in brackets):
- format_failure_rate: share of responses that are not well formed [all]
- answer_missing_rate: share of responses without an answer segment [all]
- ngram_repetition_rate, duplicate_paragraph_ratio: repetition of the answer, or of the whole response
  where it has no answer segment (what a reader gets; a model that never writes the tags loops there) [all]
- repetitive_rate: share of those over the format term's repetition limits (looping to a length) [all]
- answer_length_mean: LongBench-Write length of the answer [with an answer]
- answer_length_to_target: answer length / midpoint of the target range [with an answer and a range]
- answer_in_range_rate: share with lo <= length <= hi [with an answer and a range]
- think_length_mean: length of the think segment [with a think segment]
A key whose responses are none (e.g. no prompt has a range) is left out rather than set to NaN.
Ranges [0, 0] count as no range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean
from typing import Any

from lwz.rewards.answer import split_think_answer
from lwz.rewards.format import FormatReward, is_well_formed
from lwz.rewards.length import LENGTH_RANGE_KEY, check_range
from lwz.text import count_length


def reward_hacking_metrics(responses: Sequence[str], samples: Sequence[Mapping[str, Any]],
                           settings: FormatReward = FormatReward()) -> dict[str, float]:
    """The metrics above; `settings` gives the structure and repetition measures (the format term's)."""
    assert len(samples) == len(responses), f"{len(responses)} responses, {len(samples)} samples"
    columns: dict[str, list[float]] = {key: [] for key in (
        "format_failure_rate", "answer_missing_rate", "ngram_repetition_rate", "duplicate_paragraph_ratio",
        "repetitive_rate", "answer_length_mean", "answer_length_to_target", "answer_in_range_rate", "think_length_mean")}
    for response, sample in zip(responses, samples):
        well_formed = is_well_formed(response, expect_think=settings.think_first)
        columns["format_failure_rate"].append(float(not well_formed))
        think, answer = split_think_answer(response)
        columns["answer_missing_rate"].append(float(answer is None))
        if think is not None:
            columns["think_length_mean"].append(count_length(think))
        rate, duplicates = settings.repetition(response if answer is None else answer)
        columns["ngram_repetition_rate"].append(rate)
        columns["duplicate_paragraph_ratio"].append(duplicates)
        columns["repetitive_rate"].append(float(rate > settings.max_ngram_repeat
                                                or duplicates > settings.max_duplicate_paragraphs))
        if answer is None:
            continue
        length = count_length(answer)
        columns["answer_length_mean"].append(length)
        lo, hi = check_range(sample.get(LENGTH_RANGE_KEY, (0, 0)))
        if hi > 0:
            columns["answer_length_to_target"].append(length / ((lo + hi) / 2))
            columns["answer_in_range_rate"].append(float(lo <= length <= hi))
    return {key: fmean(values) for key, values in columns.items() if values}
