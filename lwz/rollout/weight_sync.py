"""Weight sync actor -> engines: HF-named tensors pushed in buckets of bounded size.

Peak extra memory is one bucket (plus the one tensor being gathered), not the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from lwz.runtime.bridge import Channel

SYNC_BUCKET_BYTES = 256 << 20  # what a sync gathers (and, to engines of their own, sends) at once
Weights = Callable[[], Iterator[tuple[str, "torch.Tensor"]]]  # the actor's HF-named tensors (a collective)


class WeightSink(Protocol):
    """Anything that takes a whole model's HF-named tensors in one call (a vLLM engine)."""

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None: ...

    def reset_prefix_cache(self) -> None: ...


@dataclass(frozen=True)
class SyncStats:
    """What one sync moved and how long it took."""

    seconds: float
    bytes: int
    tensors: int
    buckets: int
    waited: float = 0.0  # of `seconds` before the sync, waiting for the engines (one_step_off: the next batch)

    @property
    def gb_per_s(self) -> float:
        return self.bytes / 1e9 / max(self.seconds, 1e-9)


def buckets(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group tensors into lists of at most `bucket_bytes` of one dtype (a larger tensor travels alone)."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and (size + nbytes > bucket_bytes or tensor.dtype != bucket[0][1].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def push_weights(named: Iterable[tuple[str, torch.Tensor]], sink: WeightSink, bucket_bytes: int) -> SyncStats:
    """Stream every tensor into `sink` in ONE `load_weights` call, bucket by bucket; then reset its prefix cache.

    One call per sync matters: vLLM's reload rebuilds a layer only once all of its tensors have
    arrived within a call; a layer split over two calls is rebuilt from uninitialised memory for the
    part it did not get (garbage or NaN logits), so buckets only bound what is gathered at once.
    """
    start = time.perf_counter()
    totals = {"bytes": 0, "tensors": 0, "buckets": 0}

    def stream() -> Iterator[tuple[str, torch.Tensor]]:
        for bucket in buckets(named, bucket_bytes):
            totals["buckets"] += 1
            for name, tensor in bucket:
                totals["bytes"] += tensor.numel() * tensor.element_size()
                totals["tensors"] += 1
                yield name, tensor

    sink.load_weights(stream())
    sink.reset_prefix_cache()
    return SyncStats(time.perf_counter() - start, totals["bytes"], totals["tensors"], totals["buckets"])


def sync_sleeping_engine(weights: Weights, engine) -> SyncStats:
    """The actor's weights into an engine asleep on the actor's GPU (a `VllmEngine` with sleep mode): its
    weights wake, take the new ones, then its KV cache wakes (the sync's gathers never sit on a KV cache)."""
    engine.wake_weights("sync")
    stats = push_weights(weights(), engine, SYNC_BUCKET_BYTES)
    engine.wake_kv_cache("sync")
    return stats


def broadcast_buckets(named: Iterable[tuple[str, torch.Tensor]] | None, src: int, channel: Channel,
                      bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Engines on GPUs of their own: global rank `src` sends its buckets, each flattened into one buffer on
    the channel's device; every member of `channel` (the bridge's weight group: NCCL on GPUs, gloo on CPU)
    yields the same buckets. Other members pass `named=None`. Peak extra memory: one bucket."""
    is_src = channel.members[channel.rank] == src
    source = buckets(named, bucket_bytes) if is_src else None
    while True:
        bucket = next(source, None) if is_src else None
        header = channel.broadcast_object(None if bucket is None else [(n, t.shape, t.dtype) for n, t in bucket], src)
        if header is None:
            return
        dtype = header[0][2]
        sizes = [torch.Size(s).numel() for _, s, _ in header]
        flat = torch.cat([t.reshape(-1).to(channel.device) for _, t in bucket]) if is_src else \
            torch.empty(sum(sizes), dtype=dtype, device=channel.device)
        channel.broadcast(flat, src)
        yield [(name, part.view(shape)) for (name, shape, _), part in zip(header, flat.split(sizes))]
