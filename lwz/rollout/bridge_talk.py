"""What the actor and rollout engines on GPUs of their own (`rollout.colocate: false`) tell each other over
the bridge (lwz/runtime/bridge.py), in order; both sides (lwz/rollout/remote.py on the actor's ranks,
lwz/rollout/engine_rank.py on the engines') speak only through these functions.

1. start: the actor's rank 0 tells every rank where the run starts (steps done) and whether a batch the
   engines generated ahead came back in the checkpoint (then they go on with the step after it).
2. weights: the actor's rank 0 broadcasts the full tensors in buckets to every engine rank (before the
   first step, and after every update but the last); every actor rank takes part in the gathers.
3. batch: the engines' first rank broadcasts (step, batch, metrics, epoch) to every rank, once per step.

`sync` mode, per step n: batch n (under the weights of step n), the actor's update, weights n + 1.
`one_step_off`: batch n + 1 is generated under the weights of step n while the actor trains on step n;
after the update the actor receives it, then sends weights n + 1.
"""

from __future__ import annotations

import time

from lwz.batch import RolloutBatch
from lwz.engines.vllm_engine import VllmEngine
from lwz.rollout.weight_sync import SYNC_BUCKET_BYTES, SyncStats, Weights, broadcast_buckets, push_weights
from lwz.runtime.bridge import Bridge

__all__ = ["Batch", "receive_batch", "receive_start", "receive_weights", "send_batch", "send_start", "send_weights"]

Batch = tuple[int, RolloutBatch, dict[str, float], int]   # step, batch, rollout metrics, data epoch


def send_start(bridge: Bridge, start: int, ahead: bool) -> None:
    """(1) From every actor rank: where the run starts; rank 0's values are the ones sent."""
    bridge.objects.broadcast_object({"start": start, "ahead": ahead} if bridge.rank == 0 else None, src=0)


def receive_start(bridge: Bridge) -> tuple[int, bool]:
    """(1) On every engine rank: steps done, and whether the batch of the next step came back."""
    message = bridge.objects.broadcast_object(None, src=0)
    return message["start"], message["ahead"]


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


def send_batch(bridge: Bridge, leader: int, batch: Batch | None) -> None:
    """(3) From every engine rank: the step's batch (`batch` on the engines' first rank `leader`)."""
    bridge.objects.broadcast_object(batch, src=leader)


def receive_batch(bridge: Bridge, leader: int, step: int) -> Batch:
    """(3) On every actor rank: the batch of `step` from the engines' first rank."""
    got = bridge.objects.broadcast_object(None, src=leader)
    assert got[0] == step, f"the engines sent step {got[0]}'s batch, expected step {step}"
    return got
