"""The length reward of LongWriter-Zero: full inside the prompt's target range, falling outside it.

With the range [lo, hi] and the answer's length L (`lwz.text.count_length`: CJK characters plus
English words):

    r = 1                                  if lo <= L <= hi
    r = L / lo                             if L < lo
    r = max(0, (l_max - L) / (l_max - hi)) if L > hi

`l_max` (not published by the paper) is the length at which the reward above the range reaches 0;
it must exceed hi. Prompts annotated [0, 0] (impossible or over-long requests) get the constant
`zero_range_reward` whatever the answer: a constant within a group gives no advantage, so length is
not rewarded there. A response without an answer segment gets 0 (except for [0, 0] prompts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from lwz.errors import LwzError
from lwz.recipe.settings import check_settings, setting
from lwz.rewards.answer import extract_answer
from lwz.rewards.term import PerSampleTerm
from lwz.text import count_length

LENGTH_RANGE_KEY = "length_range"
DEFAULT_L_MAX = 20000


def check_range(length_range: Sequence[int]) -> tuple[int, int]:
    """(lo, hi) from a [lo, hi] pair; LwzError unless two integers with 0 <= lo <= hi."""
    if isinstance(length_range, (str, bytes)) or not hasattr(length_range, "__len__") or len(length_range) != 2:
        raise LwzError(None, LENGTH_RANGE_KEY, f"{length_range!r} is not a [lo, hi] pair")
    lo, hi = length_range
    if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in (lo, hi)) or not 0 <= lo <= hi:
        raise LwzError(None, LENGTH_RANGE_KEY, f"[{lo!r}, {hi!r}] is invalid: need integers 0 <= lo <= hi")
    return int(lo), int(hi)


def length_score(length: int, lo: int, hi: int, *, l_max: int = DEFAULT_L_MAX,
                 zero_range_reward: float = 1.0) -> float:
    """The reward in [0, 1] for an answer of `length` units and the target range [lo, hi]."""
    lo, hi = check_range((lo, hi))
    if lo == hi == 0:
        return float(zero_range_reward)
    if hi >= l_max:
        raise LwzError(None, "l_max", f"{l_max} must exceed the range's upper bound {hi}")
    if length < lo:
        return length / lo
    if length <= hi:
        return 1.0
    return max(0.0, (l_max - length) / (l_max - hi))


def length_reward(answer: str, length_range: Sequence[int], *, l_max: int = DEFAULT_L_MAX,
                  zero_range_reward: float = 1.0) -> float:
    """`length_score` of the answer text's LongBench-Write length."""
    lo, hi = check_range(length_range)
    return length_score(count_length(answer), lo, hi, l_max=l_max, zero_range_reward=zero_range_reward)


@dataclass(frozen=True)
class LengthReward(PerSampleTerm):
    """Parameters of the `length` reward (PAPER.md).

    The term scores `length_reward` of each response's answer against `sample["length_range"]`.
    """

    l_max: int = setting(DEFAULT_L_MAX, "Length (words) at which the reward above the range reaches 0.", ge=1)
    zero_range_reward: float = setting(1.0, "Reward for prompts annotated [0, 0] (constant: no length signal).",
                                       ge=0, le=1)
    measure: str = setting("answer", "What is counted: the text inside <answer> (none: reward 0), or the whole "
                           "response.", choices=("answer", "response"))

    def __post_init__(self) -> None:
        check_settings(self)

    def score(self, response: str, sample: Mapping[str, Any]) -> float:
        """The length reward of one response to the prompt `sample`."""
        if LENGTH_RANGE_KEY not in sample:
            raise LwzError(None, LENGTH_RANGE_KEY, "the prompt has no target range; annotate it "
                           "(lwz annotate-lengths) or drop the `length` reward")
        lo, hi = check_range(sample[LENGTH_RANGE_KEY])
        if lo == hi == 0:
            return float(self.zero_range_reward)
        answer = response if self.measure == "response" else extract_answer(response)
        if answer is None:
            return 0.0
        return length_reward(answer, (lo, hi), l_max=self.l_max, zero_range_reward=self.zero_range_reward)
