"""The rollout engines in the actor's own processes (SPMD, `rollout.colocate: true`, the paper's layout).

Each rank holds its part of a rollout engine next to its actor shard; rollout, reward and update take
turns with the GPU's memory, in the order the GPU's rules hold (`lwz.runtime.gpu_rules`): the engine is
built asleep with dummy weights, the first sync fills it; after the rollout it sleeps (its weights dropped
unless dynamic sampling may need more rounds: they are replaced after the update anyway), so the reward
model and the update have the memory; the sync wakes its weights, loads the new ones, then wakes its KV
cache. For a checkpoint it sleeps again at level 1 (its weights backed up in pinned host memory, its KV
cache dropped) and wakes after it.

`DynamicSamplingRollouts` adds dynamic sampling's rounds (`algo.dynamic_sampling`): the engine then keeps
its weights in host memory between rounds (a level-1 sleep) until the batch has groups with signal.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from lwz.algo.dynamic_sampling import fill_with_signal, groups_of
from lwz.batch import RolloutBatch
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rollout.role import EngineRole
from lwz.rollout.rollouts import Scorer
from lwz.rollout.step_rollout import StepRollout
from lwz.rollout.weight_sync import SyncStats, Weights, sync_sleeping_engine
from lwz.runtime.device import release_memory

__all__ = ["ColocatedRollouts", "DynamicSamplingRollouts"]


class ColocatedRollouts:
    """The loop's rollout side when the engines share the actor's ranks (lwz.rollout.rollouts.Rollouts)."""

    after_rollout_sleep = 2   # the engine's weights are replaced after the update anyway

    def __init__(self, recipe: Recipe, plan: Plan, distributed: bool):
        role = EngineRole.of("rollout", plan.engine("rollout").ranks)
        self.rollout = StepRollout.build(recipe, plan.device, role, distributed, plan.dp)
        self.engine = self.rollout.engine

    def resume(self, start: int, extra: dict | None, weights: Weights) -> None:
        """Before the first step: on resume (`extra` from the checkpoint) the rollout's state; then the
        actor's weights into the engine (built with dummy weights)."""
        if extra is not None:
            self.rollout.load(extra)
        sync_sleeping_engine(weights, self.engine)

    def next_batch(self, step: int, score: Scorer) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's groups, scored after the engine sleeps (the reward model and the update get the memory)."""
        batch, metrics = self.rollout.collect(step)
        self.engine.sleep(level=self.after_rollout_sleep)
        release_memory()
        return score(batch), metrics

    def sync_weights(self, weights: Weights, done: int) -> SyncStats:
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

    def generating(self, spans: list[tuple[float, float]]) -> float:
        """Nothing generates beside the scoring: the engine sleeps while the batch is scored (the GPU's rules)."""
        return 0.0

    def epoch(self, step: int) -> int:
        return self.rollout.epoch(step)

    def state(self) -> dict[str, str]:
        return self.rollout.state()


class DynamicSamplingRollouts(ColocatedRollouts):
    """Colocated rollouts with dynamic sampling (lwz.algo.dynamic_sampling): zero-signal groups are dropped
    and refilled from more rounds of the partial rollout's pool, at most `algo.max_sampling_rounds`."""

    after_rollout_sleep = 1   # the next round may need the weights

    def __init__(self, recipe: Recipe, plan: Plan, distributed: bool):
        super().__init__(recipe, plan, distributed)
        self.groups, self.max_rounds = recipe.schedule.prompts_per_step, recipe.algo.max_sampling_rounds

    def next_batch(self, step: int, score: Scorer) -> tuple[RolloutBatch, dict[str, float]]:
        batch, metrics = super().next_batch(step, score)
        rounds = itertools.count(1)
        wanted = max(self.groups, len(groups_of(batch)))   # the partial rollout's joined groups included
        batch, resampled = fill_with_signal(batch, lambda groups: score(self._more(step, groups, next(rounds))),
                                            wanted, self.max_rounds)
        metrics.update(resampled.metrics())
        return batch, metrics

    def _more(self, step: int, groups: int, round_: int) -> RolloutBatch:
        """An extra round: `groups` more complete groups of the step."""
        self.engine.wake("rollout")
        batch = self.rollout.more(step, groups, round_)
        self.engine.sleep(level=1)
        release_memory()
        return batch
