"""A rollout batch scored in place: each reward term, the group advantages, and truncated responses out of
the loss (`algo.mask_truncated`). The rollout side calls it on every batch it hands the loop, extra rounds
of dynamic sampling included; it keeps the seconds it spent, the step's reward time, and when (wall clock:
what ran beside it, engines of their own generating, is measured against it)."""

from __future__ import annotations

import time

from lwz.batch import RolloutBatch
from lwz.rewards.compute import RewardMix

__all__ = ["BatchScorer"]


class BatchScorer:
    """`scorer(batch)` sets the batch's rewards, advantages and loss mask and returns it."""

    def __init__(self, rewards: RewardMix, mask_truncated: bool):
        self.rewards, self.mask_truncated = rewards, mask_truncated
        self.spans: list[tuple[float, float]] = []   # wall-clock (start, end) of each call since the last lap

    def __call__(self, batch: RolloutBatch) -> RolloutBatch:
        began = time.time()
        batch.rewards = self.rewards.score(batch.texts, batch.samples, [len(r) for r in batch.response_ids])
        batch.advantages = self.rewards.advantages(batch.rewards, batch.group)
        if self.mask_truncated:
            batch.loss_mask = [not cut for cut in batch.truncated]
        self.spans.append((began, time.time()))
        return batch

    def lap(self) -> tuple[float, list[tuple[float, float]]]:
        """The seconds spent scoring since the last lap, and the wall-clock spans they were spent in."""
        spans, self.spans = self.spans, []
        return sum(end - start for start, end in spans), spans
