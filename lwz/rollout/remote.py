"""The actor's side of rollout engines on GPUs of their own (`rollout.colocate: false`).

The engine ranks run lwz/rollout/engine_rank.py; what the two sides tell each other, and in which order,
is lwz/rollout/bridge_talk.py. In `one_step_off` every batch but the first is one update stale; a
checkpoint keeps the batch received ahead, so a resumed run trains on what the uninterrupted one would.
The engines' GPUs are theirs alone: they stay awake while the actor saves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from lwz.batch import RolloutBatch
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rollout.bridge_talk import Batch, receive_batch, send_start, send_weights
from lwz.rollout.rollouts import Scorer
from lwz.rollout.weight_sync import SyncStats, Weights
from lwz.runtime.bridge import Bridge

__all__ = ["RemoteRollouts"]


class RemoteRollouts:
    """The loop's rollout side on an actor rank when the engines have GPUs of their own
    (lwz.rollout.rollouts.Rollouts)."""

    engine = None   # the engines live in processes of their own

    def __init__(self, recipe: Recipe, plan: Plan, bridge: Bridge):
        self.bridge, self.steps = bridge, recipe.schedule.steps
        self.leader = plan.separate_engine_ranks("rollout")[0]   # the engine rank that sends the batches
        self.one_step_off = recipe.rollout.mode == "one_step_off"
        self.ahead: Batch | None = None
        self.epochs: dict[int, int] = {}

    def resume(self, start: int, extra: dict | None, weights: Weights) -> None:
        """Tell the engines where the run starts and send the actor's weights (the engines hold dummy ones);
        on resume keep the checkpoint's batch generated ahead, if any: the engines go on with the step after it."""
        if extra is not None and extra.get("rollout_ahead"):
            ahead = extra["rollout_ahead"]
            self.ahead = (ahead["step"], RolloutBatch.from_state(ahead["batch"]), ahead["metrics"], ahead["epoch"])
        send_start(self.bridge, start, self.ahead is not None)
        send_weights(self.bridge, weights)

    def next_batch(self, step: int, score: Scorer) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's batch: the one received ahead (one_step_off), else the engines' next; scored."""
        got, batch, metrics, epoch = self.ahead if self.ahead is not None else receive_batch(self.bridge, self.leader, step)
        assert got == step, f"the engines sent step {got}'s batch for step {step}"
        self.ahead, self.epochs[step] = None, epoch
        return score(batch), metrics

    def sync_weights(self, weights: Weights, done: int) -> SyncStats:
        """After the update of step `done`: (one_step_off) first take the next step's batch, generated during the
        update (`waited`: the seconds the actor waited for it), then send the new weights to every engine rank;
        nothing after the last step."""
        if done >= self.steps:
            return SyncStats(0.0, 0, 0, 0)
        began = time.perf_counter()
        if self.one_step_off:
            self.ahead = receive_batch(self.bridge, self.leader, done)
        waited = time.perf_counter() - began
        return replace(send_weights(self.bridge, weights), waited=waited)

    @contextmanager
    def asleep(self) -> Iterator[None]:
        """Engines on GPUs of their own stay awake (nothing of theirs shares the actor's GPU)."""
        yield

    def epoch(self, step: int) -> int:
        return self.epochs[step]

    def state(self) -> dict:
        """The batch received ahead (one_step_off), which the engines will not generate again."""
        if self.ahead is None:
            return {}
        step, batch, metrics, epoch = self.ahead
        return {"rollout_ahead": {"step": step, "batch": batch.to_state(), "metrics": metrics, "epoch": epoch}}
