"""The actor's side of rollout engines on GPUs of their own (`rollout.colocate: false`).

The engine ranks run lwz/rollout/engine_rank.py; what the two sides tell each other, and in which order,
is lwz/rollout/bridge_talk.py. The engines run `lag` batches ahead (one_step_off 1, async max_staleness - 1):
the actor holds the batches it received ahead of its step, and a checkpoint keeps them with the engines'
state after the last one, so a resumed run trains on what the uninterrupted one would and the engines go on
from where they were. The engines' GPUs are theirs alone: they stay awake while the actor saves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from lwz.batch import RolloutBatch
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rollout.bridge_talk import Delivered, Start, receive_batch, rollout_lag, send_start, send_weights
from lwz.rollout.rollouts import Scorer
from lwz.rollout.weight_sync import SyncStats, Weights
from lwz.runtime.bridge import Bridge

__all__ = ["RemoteRollouts", "overlap"]


def overlap(spans: list[tuple[float, float]], others: list[tuple[float, float]]) -> float:
    """The seconds of `spans` that `others` cover (each list without overlaps of its own)."""
    return sum(max(0.0, min(end, stop) - max(start, begin)) for start, end in spans for begin, stop in others)


class RemoteRollouts:
    """The loop's rollout side on an actor rank when the engines have GPUs of their own
    (lwz.rollout.rollouts.Rollouts)."""

    engine = None   # the engines live in processes of their own

    def __init__(self, recipe: Recipe, plan: Plan, bridge: Bridge):
        self.bridge, self.steps = bridge, recipe.schedule.steps
        self.leader = plan.separate_engine_ranks("rollout")[0]   # the engine rank that sends the batches
        self.lag = rollout_lag(recipe.rollout.mode, recipe.rollout.max_staleness)
        self.ahead: dict[int, Delivered] = {}     # received, not trained on yet
        self.received = 0                          # batches received so far (steps before it)
        self.engine_state: dict | None = None      # the engines' state after the last batch received
        self.epochs: dict[int, int] = {}
        self.spans: list[tuple[float, float]] = []   # when the engines generated the batches received lately

    def resume(self, start: int, extra: dict | None, weights: Weights) -> None:
        """Tell the engines where the run starts and send the actor's weights (the engines hold dummy ones);
        on resume keep the checkpoint's batches received ahead: the engines go on after the last of them."""
        kept = (extra or {}).get("rollout_ahead", [])
        if isinstance(kept, dict):   # a one_step_off checkpoint before the engines' state was kept
            kept = [{**kept, "engine_state": {}}]
        kept = [Delivered.from_state(d) for d in kept]
        self.ahead = {d.step: d for d in kept}
        self.received = start + len(kept)
        self.engine_state = (extra or {}).get("engine_state")
        send_start(self.bridge, Start(start, self.received, self.engine_state))
        send_weights(self.bridge, weights)

    def next_batch(self, step: int, score: Scorer) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's batch (received ahead, or now), scored."""
        self._receive_through(step)
        delivered = self.ahead.pop(step)
        self.epochs[step] = delivered.epoch
        return score(delivered.batch), delivered.metrics

    def sync_weights(self, weights: Weights, done: int) -> SyncStats:
        """After the update of step `done`: take the batches the engines deliver before they use these weights
        (batch done + lag - 1; `waited`: the seconds the actor waited for them), then send the weights to every
        engine rank; nothing the engines will not use (after the last `lag` updates)."""
        if done + max(self.lag, 1) > self.steps:
            return SyncStats(0.0, 0, 0, 0)
        began = time.perf_counter()
        self._receive_through(done + self.lag - 1)
        waited = time.perf_counter() - began
        return replace(send_weights(self.bridge, weights), waited=waited)

    @contextmanager
    def asleep(self) -> Iterator[None]:
        """Engines on GPUs of their own stay awake (nothing of theirs shares the actor's GPU)."""
        yield

    def generating(self, spans: list[tuple[float, float]]) -> float:
        """Of `spans`, the seconds the engines spent generating (the batches received by now include every one
        they generated meanwhile: they hold at most `lag` batches ahead)."""
        return overlap(spans, self.spans)

    def epoch(self, step: int) -> int:
        return self.epochs[step]

    def state(self) -> dict:
        """The batches received ahead, which the engines will not generate again, and the engines' state
        after the last batch received."""
        return {"rollout_ahead": [self.ahead[s].to_state() for s in sorted(self.ahead)],
                "engine_state": self.engine_state}

    def _receive_through(self, step: int) -> None:
        while self.received <= step:
            delivered = receive_batch(self.bridge, self.leader, self.received)
            self.ahead[delivered.step], self.engine_state = delivered, delivered.engine_state
            self.spans = [*self.spans[-(self.lag + 2):], delivered.generating]
            self.received += 1
