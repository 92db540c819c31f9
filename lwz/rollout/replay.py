"""Rollout replay (slime's train-only and rollout-only debugging): a run keeps each step's scored batch
(`logging.save_rollouts`), and another run trains on those batches without rollout engines (`rollout.replay`).

A saved step is one tensor file, RUN/rollouts/step-N.pt (lwz.tensor_state: token ids, engine logprobs and
versions as tensors), holding the batch as the actor got it (rewards, advantages, loss mask), the rollout
metrics and the data epoch. Replayed with the saved run's recipe, the updates are the saved run's.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from lwz import atomic
from lwz.batch import RolloutBatch
from lwz.recipe.schema import Recipe
from lwz.rollout.rollouts import Scorer
from lwz.rollout.weight_sync import SyncStats, Weights
from lwz.tensor_state import pack, unpack

__all__ = ["ReplayRollouts", "save_rollout", "saved_rollout"]


def saved_rollout(run: str | Path, step: int) -> Path:
    """Where a run keeps the batch of step `step` (counted from 1, as in metrics.jsonl)."""
    return Path(run) / "rollouts" / f"step-{step:08d}.pt"


def save_rollout(run: Path, step: int, batch: RolloutBatch, metrics: dict[str, float], epoch: int) -> None:
    """Keep the scored batch of step `step` (atomically: a killed run leaves no half-written file)."""
    path = saved_rollout(run, step)
    path.parent.mkdir(exist_ok=True)
    data = io.BytesIO()
    torch.save(pack({"batch": batch.to_state(), "metrics": metrics, "epoch": epoch}), data)
    atomic.write_bytes(path, data.getvalue())


class ReplayRollouts:
    """The loop's rollout side from a saved run's batches (lwz.rollout.rollouts.Rollouts): no engines."""

    engine = None

    def __init__(self, recipe: Recipe):
        self.run = Path(recipe.rollout.replay)
        self.epochs: dict[int, int] = {}

    def resume(self, start: int, extra: dict | None, weights: Weights) -> None:
        """Nothing to start: the batches are on disk."""

    def next_batch(self, step: int, score: Scorer) -> tuple[RolloutBatch, dict[str, float]]:
        """The saved batch of the step, as scored when it was saved (`score` is not called)."""
        saved = unpack(torch.load(saved_rollout(self.run, step + 1), weights_only=True))
        self.epochs[step] = saved["epoch"]
        return RolloutBatch.from_state(saved["batch"]), saved["metrics"]

    def sync_weights(self, weights: Weights, done: int) -> SyncStats:
        return SyncStats(0.0, 0, 0, 0)

    @contextmanager
    def asleep(self) -> Iterator[None]:
        yield

    def generating(self, spans: list[tuple[float, float]]) -> float:
        """Nothing generates beside the scoring: no engines."""
        return 0.0

    def epoch(self, step: int) -> int:
        return self.epochs[step]

    def state(self) -> dict:
        return {}
