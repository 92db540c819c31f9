"""The actor's side of rollout engines on GPUs of their own (`rollout.colocate: false`).

The engine ranks run lwz/rollout/engine_rank.py; the two sides meet on the bridge in the same order every
step. The engines are built with dummy weights: the actor sends its weights before the first step.
`sync`: the engines generate step n under the weights of step n while the actor waits, then take the
weights of step n + 1. `one_step_off`: the engines generate step n + 1 under the weights of step n while
the actor trains on step n; after the update the actor receives that batch (it waits only for what is
left of the generation) and sends the new weights, so every batch but the first is one update stale.
A checkpoint keeps the batch received ahead, so a resumed run trains on what the uninterrupted one would.
The engines' GPUs are theirs alone: they stay awake while the actor saves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path


from lwz.batch import RolloutBatch
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rollout.sync import SYNC_BUCKET_BYTES, SyncStats, Weights, broadcast_buckets
from lwz.runtime.bridge import Bridge

__all__ = ["RemoteRollouts"]



class RemoteRollouts:
    """The loop's rollout side on an actor rank when the engines have GPUs of their own."""

    def __init__(self, recipe: Recipe, plan: Plan, bridge: Bridge):
        self.bridge, self.steps = bridge, recipe.schedule.steps
        self.leader = plan.separate_engine_ranks("rollout")[0]   # the engine rank that sends the batches
        self.one_step_off = recipe.rollout.mode == "one_step_off"
        self.ahead: tuple[int, RolloutBatch, dict[str, float]] | None = None
        self.epochs: dict[int, int] = {}

    def begin(self, start: int, extra: dict | None, weights: Weights) -> None:
        """Tell the engines where the run starts and send the actor's weights (the engines hold dummy ones);
        on resume keep the checkpoint's batch generated ahead, if any: the engines go on with the step after it."""
        if extra is not None and extra.get("rollout_ahead"):
            ahead = extra["rollout_ahead"]
            self.ahead = (ahead["step"], RolloutBatch.from_json(ahead["batch"]), ahead["metrics"])
            self.epochs[ahead["step"]] = ahead["epoch"]
        message = {"start": start, "ahead": self.ahead is not None}
        self.bridge.objects.broadcast_object(message if self.bridge.rank == 0 else None, src=0)
        self._send(weights)

    def collect(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's batch: the one received ahead (one_step_off), else the engines' next."""
        if self.ahead is None:
            self.ahead = self._receive(step)
        got, batch, metrics = self.ahead
        assert got == step, f"the engines sent step {got}'s batch for step {step}"
        self.ahead = None
        return batch, metrics

    def more(self, step: int, groups: int, round_: int) -> RolloutBatch:
        raise AssertionError("dynamic sampling on engines of their own is rejected by the plan")

    def push(self, weights: Weights, done: int) -> SyncStats:
        """After the update of step `done`: (one_step_off) receive the next step's batch, generated during the
        update, then send the new weights to every engine rank; nothing after the last step."""
        if done >= self.steps:
            return SyncStats(0.0, 0, 0, 0)
        began = time.perf_counter()
        if self.one_step_off:
            self.ahead = self._receive(done)
        waited = time.perf_counter() - began
        return replace(self._send(weights), waited=waited)

    @contextmanager
    def asleep(self) -> Iterator[None]:
        """Engines on GPUs of their own stay awake (nothing of theirs shares the actor's GPU)."""
        yield

    def evaluate(self, done: int, run_dir: Path) -> dict[str, float]:
        raise AssertionError("evaluation during training on engines of their own is rejected by the plan")

    def epoch(self, step: int) -> int:
        return self.epochs[step]

    def state(self) -> dict:
        """The batch received ahead (one_step_off), which the engines will not generate again."""
        if self.ahead is None:
            return {}
        step, batch, metrics = self.ahead
        return {"rollout_ahead": {"step": step, "batch": batch.to_json(), "metrics": metrics,
                                  "epoch": self.epochs[step]}}

    def _receive(self, step: int) -> tuple[int, RolloutBatch, dict[str, float]]:
        got, batch, metrics, epoch = self.bridge.objects.broadcast_object(None, src=self.leader)
        assert got == step, f"the engines sent step {got}'s batch, expected step {step}"
        self.epochs[got] = epoch
        return got, batch, metrics

    def _send(self, weights: Weights) -> SyncStats:
        """Every actor rank gathers the full tensors (collective); rank 0 broadcasts them in buckets."""
        start, named = time.perf_counter(), weights()
        channel = self.bridge.weights
        if channel is None:   # not the actor's rank 0: take part in the gathers only
            for _ in named:
                pass
            return SyncStats(time.perf_counter() - start, 0, 0, 0)
        size = tensors = buckets = 0
        for bucket in broadcast_buckets(named, 0, channel, SYNC_BUCKET_BYTES):   # one bucket held at a time
            buckets, tensors = buckets + 1, tensors + len(bucket)
            size += sum(t.numel() * t.element_size() for _, t in bucket)
        return SyncStats(time.perf_counter() - start, size, tensors, buckets)
