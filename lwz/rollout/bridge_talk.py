"""What the actor and rollout engines on GPUs of their own (`rollout.colocate: false`) tell each other over
the bridge (lwz/runtime/bridge.py), in order; both sides (lwz/rollout/remote.py on the actor's ranks,
lwz/rollout/engine_rank.py on the engines') speak only through these functions.

1. start: the actor's rank 0 tells every rank where the run starts (steps done), how many batches the
   engines delivered before the checkpoint (the ones it keeps), and the engines' state after the last of them.
2. weights: the actor's rank 0 broadcasts the full tensors in buckets to every engine rank (before the
   first step, and after the updates the engines will use); every actor rank takes part in the gathers.
3. batch: the engines' first rank broadcasts a `Delivered` (step, batch, metrics, epoch, the engines' state
   right after it) to every rank, once per step.

The engines run `lag` batches ahead of the actor (`rollout_lag`): right after delivering batch m, at that
engine step, they take the weights of step m + 1 - lag (the actor's update on batch m - lag), waiting only
if the actor has not made it yet. The order is fixed, so a resumed run hands over exactly where the
uninterrupted one did. `sync` (lag 0), per step n: batch n, the update, weights n + 1. `one_step_off` (lag
1): batch n + 1 is generated under the weights of step n while the actor trains on step n; after the update
the actor receives it, then sends weights n + 1. `async` (lag max_staleness - 1): the partial rollout's
pool on the engines, its unfinished samples continuing under each new version.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from lwz.batch import RolloutBatch
from lwz.engines.vllm_engine import VllmEngine
from lwz.rollout.weight_sync import SYNC_BUCKET_BYTES, SyncStats, Weights, broadcast_buckets, push_weights
from lwz.runtime.bridge import Bridge

__all__ = ["Delivered", "Start", "receive_batch", "receive_start", "receive_weights", "rollout_lag", "send_batch",
           "send_start", "send_weights"]


@dataclass
class Delivered:
    """A batch the engines delivered: its step, the batch (unscored), the rollout metrics, the data epoch of its
    prompts, the engines' rollout state right after it (what they resume from) and the wall-clock span they
    generated it in."""

    step: int
    batch: RolloutBatch
    metrics: dict[str, float]
    epoch: int
    engine_state: dict
    generating: tuple[float, float] = (0.0, 0.0)

    def to_state(self) -> dict:
        return {**asdict(self), "batch": self.batch.to_state()}

    @classmethod
    def from_state(cls, state: dict) -> Delivered:
        return cls(**{**state, "batch": RolloutBatch.from_state(state["batch"])})


@dataclass
class Start:
    """Where the engines begin: `start` steps done, batches before `delivered` already with the actor, and
    `engine_state` (their state after delivering the last of those; None: a fresh rollout)."""

    start: int
    delivered: int
    engine_state: dict | None


def rollout_lag(mode: str, max_staleness: int) -> int:
    """How many batches the engines of their own run ahead of the actor: sync 0, one_step_off 1, async
    max_staleness - 1 (the new tokens of a batch are then max_staleness - 1 updates old when trained on, the
    carried ones up to max_staleness)."""
    if mode == "async":
        return max_staleness - 1
    return 1 if mode == "one_step_off" else 0


def send_start(bridge: Bridge, start: Start) -> None:
    """(1) From every actor rank: where the run starts; rank 0's values are the ones sent."""
    bridge.objects.broadcast_object(start if bridge.rank == 0 else None, src=0)


def receive_start(bridge: Bridge) -> Start:
    """(1) On every engine rank: where the run starts."""
    return bridge.objects.broadcast_object(None, src=0)


def send_weights(bridge: Bridge, weights: Weights) -> SyncStats:
    """(2) From every actor rank: gather the full tensors (collective); rank 0 broadcasts them in buckets,
    one bucket held at a time."""
    start, named = time.perf_counter(), weights()
    channel = bridge.weights
    if channel is None:   # not the actor's rank 0: take part in the gathers only
        for _ in named:
            pass
        return SyncStats(time.perf_counter() - start, 0, 0, 0)
    size = tensors = buckets = 0
    for bucket in broadcast_buckets(named, 0, channel, SYNC_BUCKET_BYTES):
        buckets, tensors = buckets + 1, tensors + len(bucket)
        size += sum(t.numel() * t.element_size() for _, t in bucket)
    return SyncStats(time.perf_counter() - start, size, tensors, buckets)


def receive_weights(bridge: Bridge, engine: VllmEngine) -> None:
    """(2) On every engine rank: the actor's buckets into `engine`, one reload per sync."""
    assert bridge.weights is not None, "an engine rank is on the bridge's weight group"
    received = (item for bucket in broadcast_buckets(None, 0, bridge.weights, SYNC_BUCKET_BYTES) for item in bucket)
    push_weights(received, engine, SYNC_BUCKET_BYTES)


def send_batch(bridge: Bridge, leader: int, delivered: Delivered | None) -> None:
    """(3) From every engine rank: the step's batch (`delivered` on the engines' first rank `leader`)."""
    bridge.objects.broadcast_object(delivered, src=leader)


def receive_batch(bridge: Bridge, leader: int, step: int) -> Delivered:
    """(3) On every actor rank: the batch of `step` from the engines' first rank."""
    got = bridge.objects.broadcast_object(None, src=leader)
    assert got.step == step, f"the engines sent step {got.step}'s batch, expected step {step}"
    return got
