"""DAPO's soft overlong punishment (Yu et al., arXiv 2503.14476, eq. 13), on response tokens.

With the longest allowed response L_max (`max_length`; null: `rollout.max_tokens`) and a buffer of
L_cache tokens (`buffer`), a response of |y| tokens gets

    0                                   if |y| <= L_max - L_cache
    ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
    -1                                  if |y| > L_max

times `penalty_factor`: responses that run into the length limit learn to end before it, rather
than being cut off with the same reward as a finished answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from lwz.errors import LwzError


def overlong_penalty(tokens: int, max_length: int, buffer: int, penalty_factor: float = 1.0) -> float:
    """The punishment (<= 0) of a response of `tokens` tokens."""
    start = max_length - buffer
    if tokens <= start:
        return 0.0
    if tokens <= max_length:
        return penalty_factor * (start - tokens) / buffer
    return -penalty_factor


@dataclass(frozen=True)
class OverlongPenalty:
    """The `overlong` term: `overlong_penalty` of each response's token count.

    buffer: L_cache, the tokens before the limit over which the punishment grows to -1.
    max_length: L_max in tokens; null: the rollout's max_tokens (set when the recipe builds the term).
    penalty_factor: scales the punishment.
    """

    buffer: int = 1024
    max_length: int | None = None
    penalty_factor: float = 1.0
    uses_token_counts = True  # RewardMix passes each response's token count

    @staticmethod
    def recipe_defaults(recipe: Any) -> dict[str, Any]:
        """What a recipe's term leaves null: the rollout's longest response."""
        return {"max_length": recipe.rollout.max_tokens}

    def __post_init__(self) -> None:
        for name in ("buffer", "max_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value < 1):
                raise LwzError(None, name, f"{value!r} is invalid: need an integer >= 1")
        if self.max_length is not None and self.buffer > self.max_length:
            raise LwzError(None, "buffer", f"{self.buffer} exceeds max_length {self.max_length}")
        if isinstance(self.penalty_factor, bool) or not isinstance(self.penalty_factor, Real) or self.penalty_factor < 0:
            raise LwzError(None, "penalty_factor", f"{self.penalty_factor!r} is invalid: need a number >= 0")

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]],
                 closed_by_stop: Sequence[bool] | None = None, *,
                 response_tokens: Sequence[int] | None = None) -> list[float]:
        """The punishment of each response, from `response_tokens` (required)."""
        if response_tokens is None or len(response_tokens) != len(responses):
            raise LwzError(None, "overlong", "needs the token count of every response")
        if self.max_length is None:
            raise LwzError(None, "max_length", "unset: build the term from a recipe or give max_length")
        return [overlong_penalty(n, self.max_length, self.buffer, self.penalty_factor) for n in response_tokens]
