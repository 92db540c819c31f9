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
from typing import Any, Optional

from lwz.errors import LwzError
from lwz.recipe.settings import check_settings, setting


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
    """Parameters of the `overlong` reward: DAPO's soft overlong punishment (0 down to -penalty_factor).

    The term scores `overlong_penalty` of each response's token count.
    """

    buffer: int = setting(1024, "Tokens before max_length over which the punishment grows from 0 to -1.", ge=1)
    max_length: Optional[int] = setting(None, "Longest response in tokens; null: rollout.max_tokens.", ge=1)
    penalty_factor: float = setting(1.0, "Scale of the punishment.", ge=0)
    uses_token_counts = True  # RewardMix passes each response's token count

    @staticmethod
    def recipe_defaults(recipe: Any) -> dict[str, Any]:
        """What a recipe's term leaves null: the rollout's longest response."""
        return {"max_length": recipe.rollout.max_tokens}

    def __post_init__(self) -> None:
        check_settings(self)
        if self.max_length is not None and self.buffer > self.max_length:
            raise LwzError(None, "buffer", f"{self.buffer} exceeds max_length {self.max_length}")

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]], *,
                 response_tokens: Sequence[int] | None = None) -> list[float]:
        """The punishment of each response, from `response_tokens` (required)."""
        if response_tokens is None or len(response_tokens) != len(responses):
            raise LwzError(None, "overlong", "needs the token count of every response")
        if self.max_length is None:
            raise LwzError(None, "max_length", "unset: build the term from a recipe or give max_length")
        return [overlong_penalty(n, self.max_length, self.buffer, self.penalty_factor) for n in response_tokens]
