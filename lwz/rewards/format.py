"""The format reward: a well-formed think/answer response without repeated content.

Reward 1.0 when the response is well formed (`is_well_formed`) and its answer passes both
repetition checks, else 0.0:
- n-gram repetition rate (`repetition.ngram_repetition_rate`) at most `max_ngram_repeat`;
- near-duplicate paragraph ratio (`repetition.duplicate_paragraph_ratio`) at most
  `max_duplicate_paragraphs`.
Setting both limits to 1.0 turns the repetition penalty off (the paper's reward-hacking ablation).
The defaults were chosen on natural long texts (12 WritingBench source documents, EN and ZH): their
n-gram repetition rates (4 words / 8 CJK characters) are 0.01-0.07 and their duplicate-paragraph
ratios 0-0.05, a formulaic financial press release measures 0.34 and 0.10, while a text whose
second half copies its first measures about 0.5 and 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from lwz.recipe.settings import check_settings, setting
from lwz.rewards.answer import ANSWER_CLOSE, ANSWER_OPEN, TAGS, THINK_CLOSE, THINK_OPEN, split_think_answer
from lwz.rewards.repetition import (DEFAULT_MIN_PARAGRAPH_UNITS, DEFAULT_NGRAM, DEFAULT_NGRAM_CJK,
                                    DEFAULT_PARAGRAPH_SIMILARITY, duplicate_paragraph_ratio, ngram_repetition_rate)
from lwz.rewards.term import PerSampleTerm


def is_well_formed(response: str, *, expect_think: bool = True) -> bool:
    """True for exactly `<think>...</think>` then `<answer>...</answer>`, whitespace only around them.

    Each tag appears exactly once (so none is nested or repeated) and the answer is not blank.
    With `expect_think=False` (no-think template) the response is one answer segment and any think
    tag fails it.
    """
    order = [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE] if expect_think else [ANSWER_OPEN, ANSWER_CLOSE]
    if any(response.count(tag) != (tag in order) for tag in TAGS):
        return False
    starts = [response.index(tag) for tag in order]
    if starts != sorted(starts):
        return False
    outside = [response[:starts[0]], response[starts[-1] + len(ANSWER_CLOSE):]]
    if expect_think:
        outside.append(response[starts[1] + len(THINK_CLOSE):starts[2]])
    answer = response[starts[-2] + len(ANSWER_OPEN):starts[-1]]
    return not any(part.strip() for part in outside) and bool(answer.strip())


@dataclass(frozen=True)
class FormatReward(PerSampleTerm):
    """Parameters of the `format` reward: think/answer structure, zero when the answer repeats itself.

    The term scores each response as the module docstring says.
    """

    expect_think: Optional[bool] = setting(None, "Expect <think>...</think><answer>...</answer> (true) or one "
                                           "<answer> only (false); null: from rollout.template.")
    ngram: int = setting(DEFAULT_NGRAM, "n of the n-gram repetition rate and paragraph shingles, in words.", ge=1)
    ngram_cjk: int = setting(DEFAULT_NGRAM_CJK, "The same n in CJK characters (natural Chinese repeats many short "
                             "n-grams).", ge=1)
    max_ngram_repeat: float = setting(0.4, "Repetition rate above which the reward is 0 (1 disables).", ge=0, le=1)
    paragraph_similarity: float = setting(DEFAULT_PARAGRAPH_SIMILARITY, "Shingle Jaccard similarity from which two "
                                          "paragraphs are duplicates.", gt=0, le=1)
    min_paragraph_units: int = setting(DEFAULT_MIN_PARAGRAPH_UNITS, "Shorter paragraphs (headings, list items) are "
                                       "not compared.", ge=1)
    max_duplicate_paragraphs: float = setting(0.2, "Duplicate-paragraph ratio above which the reward is 0 "
                                              "(1 disables).", ge=0, le=1)

    @staticmethod
    def recipe_defaults(recipe: Any) -> dict[str, Any]:
        """What a recipe's term leaves null: the structure of the rollout's template."""
        return {"expect_think": recipe.rollout.template == "think"}

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def think_first(self) -> bool:
        """Whether a think segment must precede the answer: unless `expect_think` is false (null, left by a term
        built in code rather than from a recipe, means the think template's structure)."""
        return self.expect_think is not False

    def repetition(self, answer: str) -> tuple[float, float]:
        """(n-gram repetition rate, near-duplicate paragraph ratio) of an answer, with these settings."""
        rate = ngram_repetition_rate(answer, ngram=self.ngram, ngram_cjk=self.ngram_cjk)
        duplicates = duplicate_paragraph_ratio(
            answer, paragraph_similarity=self.paragraph_similarity, min_paragraph_units=self.min_paragraph_units,
            ngram=self.ngram, ngram_cjk=self.ngram_cjk)
        return rate, duplicates

    def score(self, response: str, sample: Mapping[str, Any]) -> float:
        """1.0 for a well-formed response whose answer passes the repetition checks, else 0.0."""
        if not is_well_formed(response, expect_think=self.think_first):
            return 0.0
        _, answer = split_think_answer(response)
        assert answer is not None, "a well-formed response has an answer"
        rate, duplicates = self.repetition(answer)
        return float(rate <= self.max_ngram_repeat and duplicates <= self.max_duplicate_paragraphs)
