"""Two ranks joined only by the bridge (lwz/runtime/bridge.py, gloo), as an actor rank and an engine rank
of their own are: rank 0 broadcasts a mixed-dtype state in small buckets, rank 1 streams what it receives
through `push_weights` into a recording sink and saves it with the (seeded) source state.

    python -m torch.distributed.run --standalone --nproc_per_node=2 broadcast_worker.py OUT
"""

from __future__ import annotations

import os
import sys

import torch

from lwz.rollout.weight_sync import broadcast_buckets, push_weights
from lwz.runtime.bridge import Bridge


def source_state() -> dict[str, torch.Tensor]:
    """A model-like state: fp32 matrices, a bf16 tail, one tensor larger than a bucket."""
    g = torch.Generator().manual_seed(0)
    state = {f"layers.{i}.weight": torch.randn(64, 32, generator=g) for i in range(6)}
    state["big.weight"] = torch.randn(256, 64, generator=g)
    state.update({f"norm.{i}.weight": torch.randn(32, generator=g).bfloat16() for i in range(3)})
    return state


class RecordingSink:
    """Keeps what each `load_weights` call received."""

    def __init__(self) -> None:
        self.calls: list[dict[str, torch.Tensor]] = []
        self.resets = 0

    def load_weights(self, named_tensors):
        self.calls.append({name: tensor.clone() for name, tensor in named_tensors})

    def reset_prefix_cache(self) -> None:
        self.resets += 1


def main(out: str) -> None:
    rank = int(os.environ["RANK"])
    bridge = Bridge(rank=rank, world=2, host="127.0.0.1", port=int(os.environ["MASTER_PORT"]) + 2,
                    weight_ranks=[0, 1], backend="gloo", device=torch.device("cpu"))
    sink = RecordingSink()
    received = broadcast_buckets(source_state().items() if rank == 0 else None, src=0, channel=bridge.weights,
                                 bucket_bytes=16 << 10)
    stats = push_weights((item for bucket in received for item in bucket), sink, bucket_bytes=16 << 10)
    if rank == 1:
        torch.save({"calls": sink.calls, "resets": sink.resets, "buckets": stats.buckets, "bytes": stats.bytes,
                    "source": source_state()}, out)
    bridge.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
