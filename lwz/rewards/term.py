"""What a reward term is: a callable scoring a batch of responses, one float each."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class RewardTerm(Protocol):
    """Scores responses; `samples[i]` is the prompt's data row (e.g. its `length_range`).

    `closed_by_stop[i]` is True when response i stopped on the `</answer>` stop string and the
    rollout stripped it; None means no response did.
    """

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]],
                 closed_by_stop: Sequence[bool] | None = None) -> list[float]: ...


class PerSampleTerm(ABC):
    """Base of terms that score each response on its own: subclasses define `score`."""

    @abstractmethod
    def score(self, response: str, sample: Mapping[str, Any], closed_by_stop: bool = False) -> float:
        """The reward of one response to the prompt `sample`."""

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]],
                 closed_by_stop: Sequence[bool] | None = None) -> list[float]:
        """`score` of each (response, sample) pair."""
        stops = [False] * len(responses) if closed_by_stop is None else list(closed_by_stop)
        assert len(samples) == len(responses) == len(stops), (
            f"{len(responses)} responses, {len(samples)} samples, {len(stops)} stop flags")
        return [self.score(r, s, c) for r, s, c in zip(responses, samples, stops)]
