"""What a reward term is: a callable scoring a batch of responses, one float each."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class RewardTerm(Protocol):
    """Scores responses; `samples[i]` is the prompt's data row (e.g. its `length_range`)."""

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]: ...


class PerSampleTerm(ABC):
    """Base of terms that score each response on its own: subclasses define `score`."""

    @abstractmethod
    def score(self, response: str, sample: Mapping[str, Any]) -> float:
        """The reward of one response to the prompt `sample`."""

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]:
        """`score` of each (response, sample) pair."""
        assert len(samples) == len(responses), f"{len(responses)} responses, {len(samples)} samples"
        return [self.score(r, s) for r, s in zip(responses, samples)]
