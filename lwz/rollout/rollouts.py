"""What the GRPO loop asks of its rollout side, whatever the mode (`rollout.mode`) and layout
(`rollout.colocate`): the `Rollouts` protocol, and `build_rollouts`, which picks the implementation.

- `ColocatedRollouts` (lwz/rollout/colocated.py): engines in the actor's own processes, taking turns with
  it for the GPU's memory; `DynamicSamplingRollouts` adds dynamic sampling's rounds to them.
- `RemoteRollouts` (lwz/rollout/remote.py): engines on GPUs of their own, met over the bridge
  (lwz/rollout/bridge_talk.py says what the two sides tell each other, in order).
- `ReplayRollouts` (lwz/rollout/replay.py): a saved run's batches (`rollout.replay`), no engines.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from lwz.batch import RolloutBatch
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.engines.vllm_engine import VllmEngine
from lwz.rollout.weight_sync import SyncStats, Weights
from lwz.runtime.bridge import Bridge

__all__ = ["Rollouts", "Scorer", "build_rollouts"]

Scorer = Callable[[RolloutBatch], RolloutBatch]


class Rollouts(Protocol):
    """A run's rollout side on an actor rank."""

    engine: VllmEngine | None   # the rollout engine in this process (colocated), else None

    def resume(self, start: int, extra: dict | None, weights: Weights) -> None:
        """Before the first step (`start` steps done; `extra`: the checkpoint's `state()`, on resume): the
        actor's weights into engines built with dummy ones."""

    def next_batch(self, step: int, score: Scorer) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's batch, scored by `score`, and the rollout metrics."""

    def sync_weights(self, weights: Weights, done: int) -> SyncStats:
        """After the update of step `done`: the new weights to the engines."""

    def asleep(self) -> AbstractContextManager[None]:
        """Nothing of the engines on the actor's GPU inside it (a checkpoint)."""

    def generating(self, spans: list[tuple[float, float]]) -> float:
        """Of the wall-clock `spans` (the step's scoring), the seconds the rollout engines generated beside it."""

    def epoch(self, step: int) -> int:
        """The data epoch of the step's (last) prompts."""

    def state(self) -> dict:
        """What a checkpoint keeps for `resume`."""


def build_rollouts(recipe: Recipe, plan: Plan, bridge: Bridge | None, distributed: bool) -> Rollouts:
    """The recipe's rollout side on this actor rank (`bridge`: to engines of their own, else None;
    `distributed`: the actor's world has several ranks)."""
    from lwz.rollout.colocated import ColocatedRollouts, DynamicSamplingRollouts
    from lwz.rollout.remote import RemoteRollouts
    from lwz.rollout.replay import ReplayRollouts

    if recipe.rollout.replay:
        return ReplayRollouts(recipe)
    if bridge is not None:
        return RemoteRollouts(recipe, plan, bridge)
    kind = DynamicSamplingRollouts if recipe.algo.dynamic_sampling else ColocatedRollouts
    return kind(recipe, plan, distributed)
