"""Weight sync actor -> engines: HF-named tensors pushed in buckets of bounded size.

Peak extra memory is one bucket (plus the one tensor being gathered), not the model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.distributed as dist


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


def broadcast_buckets(named: Iterable[tuple[str, torch.Tensor]] | None, src: int, group: dist.ProcessGroup | None,
                      bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Engines on their own devices: `src` sends its buckets flattened into one buffer each; every rank
    of `group` (NCCL on GPU, gloo on CPU) yields the same buckets. Non-source ranks pass `named=None`."""
    is_src = dist.get_rank() == src
    source = buckets(named, bucket_bytes) if is_src else None
    while True:
        header = [None]
        if is_src:
            bucket = next(source, None)
            header = [None if bucket is None else [(n, t.shape, t.dtype) for n, t in bucket]]
        dist.broadcast_object_list(header, src=src, group=group)
        if header[0] is None:
            return
        dtype = header[0][0][2]
        sizes = [torch.Size(s).numel() for _, s, _ in header[0]]
        flat = torch.cat([t.reshape(-1) for _, t in bucket]) if is_src else torch.empty(sum(sizes), dtype=dtype)
        dist.broadcast(flat, src=src, group=group)
        yield [(name, part.view(shape)) for (name, shape, _), part in zip(header[0], flat.split(sizes))]
