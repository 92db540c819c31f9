"""The rollout engines in the actor's own processes (SPMD, `rollout.colocate: true`, the paper's layout).

Each rank holds its part of a rollout engine next to its actor shard; rollout, reward and update take
turns with the GPU's memory, in the order the GPU's rules hold (`lwz.runtime.gpu_rules`): the engine is
built asleep with dummy weights, the first sync fills it; after the rollout it sleeps (its weights dropped
unless dynamic sampling may need more rounds: they are replaced after the update anyway), so the reward
model and the update have the memory; the sync wakes its weights, loads the new ones, then wakes its KV
cache. For a checkpoint it sleeps again at level 1 (its weights backed up in pinned host memory, its KV
cache dropped) and wakes after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lwz.batch import RolloutBatch
from lwz.eval.during_training import evaluate_during_training
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rollout.role import EngineRole
from lwz.rollout.step_rollout import StepRollout
from lwz.rollout.sync import SyncStats, Weights, sync_sleeping_engine
from lwz.runtime.device import release_memory

__all__ = ["ColocatedRollouts"]


class ColocatedRollouts:
    """The loop's rollout side when the engines share the actor's ranks."""

    def __init__(self, recipe: Recipe, plan: Plan, distributed: bool):
        self.recipe = recipe
        role = EngineRole.of("rollout", plan.engine("rollout").ranks)
        self.rollout = StepRollout.build(recipe, plan.device, role, distributed)
        self.engine = self.rollout.engine

    def begin(self, start: int, extra: dict | None, weights: Weights) -> None:
        """Before the first step: on resume (`extra` from the checkpoint) the rollout's state; then the
        actor's weights into the engine (built with dummy weights)."""
        if extra is not None:
            self.rollout.load(extra)
        sync_sleeping_engine(weights, self.engine)

    def collect(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's groups; then the engine sleeps so that the reward model and the update get the memory."""
        batch, metrics = self.rollout.collect(step)
        self.engine.sleep(level=1 if self.recipe.algo.dynamic_sampling else 2)
        release_memory()
        return batch, metrics

    def more(self, step: int, groups: int, round_: int) -> RolloutBatch:
        """Dynamic sampling's extra round: `groups` more complete groups of the step."""
        self.engine.wake("rollout")
        batch = self.rollout.more(step, groups, round_)
        self.engine.sleep(level=1)
        release_memory()
        return batch

    def push(self, weights: Weights, done: int) -> SyncStats:
        """After the update of step `done`: the new weights into the engine, which then serves the evaluation
        and the next rollout."""
        return sync_sleeping_engine(weights, self.engine)

    @contextmanager
    def asleep(self) -> Iterator[None]:
        """The engine asleep for a checkpoint (its weights kept in host memory), awake again after it."""
        self.engine.sleep(level=1)
        release_memory()
        try:
            yield
        finally:
            self.engine.wake("save")

    def evaluate(self, done: int, run_dir: Path) -> dict[str, float]:
        return evaluate_during_training(self.engine, self.recipe, done, run_dir)

    def epoch(self, step: int) -> int:
        return self.rollout.epoch(step)

    def state(self) -> dict[str, str]:
        return self.rollout.state()
