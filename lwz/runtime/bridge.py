"""Process groups across a run's worlds: the actor's ranks and the ranks of engines on GPUs of their own.

With `rollout.colocate: false` the actor's ranks form one torch.distributed world (megatron-core builds
its groups over the default group, so it must hold only actor ranks) and the engine ranks another (vLLM's
`external_launcher` over theirs). The bridge joins them without a shared default group, the way verl and
NeMo-RL join a trainer and inference workers: process groups built directly on a TCPStore that rank 0 of
the job hosts. Two of them: `objects` over every rank (gloo: batches, step messages) and `weights` over the
actor's rank 0 and every engine rank (NCCL on GPUs, gloo on CPU: the weight buckets).
"""

from __future__ import annotations

import datetime
import pickle
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from lwz.launch.ports import bind_retrying

__all__ = ["Bridge", "Channel"]


class Channel:
    """One process group of the bridge, addressed by global ranks; every call is collective over it."""

    def __init__(self, group: Any, members: Sequence[int], rank: int, device: torch.device):
        self.group, self.members, self.device = group, list(members), device
        self.rank = self.members.index(rank)

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """`tensor` of global rank `src` into every member's `tensor` (same shape and dtype), in place."""
        options = dist.BroadcastOptions()
        options.rootRank = self.members.index(src)
        self.group.broadcast([tensor], options).wait()
        return tensor

    def broadcast_object(self, obj: Any, src: int) -> Any:
        """A picklable object of global rank `src`, returned on every member."""
        is_src = self.members[self.rank] == src
        payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8) if is_src else None
        size = torch.tensor([payload.numel() if is_src else 0], dtype=torch.long, device=self.device)
        self.broadcast(size, src)
        data = payload.to(self.device) if is_src else torch.empty(int(size.item()), dtype=torch.uint8,
                                                                  device=self.device)
        self.broadcast(data, src)
        return obj if is_src else pickle.loads(data.cpu().numpy().tobytes())


class Bridge:
    """The run's cross-world groups; build it on every rank of the job (global `rank` of `world`)."""

    def __init__(self, *, rank: int, world: int, host: str, port: int, weight_ranks: Sequence[int],
                 backend: str, device: torch.device, timeout_s: float = 1800):
        timeout = datetime.timedelta(seconds=timeout_s)
        store = bind_retrying(lambda: dist.TCPStore(host, port, world, rank == 0, timeout=timeout),
                              f"the bridge's store on {host}:{port}")
        self._store = store  # rank 0 hosts it: it must live as long as the groups
        self.rank = rank
        objects = dist.ProcessGroupGloo(dist.PrefixStore("objects", store), rank, world, timeout)
        self.objects = Channel(objects, range(world), rank, torch.device("cpu"))
        self.weights: Channel | None = None
        if rank in weight_ranks:
            prefix = dist.PrefixStore("weights", store)
            index, size = list(weight_ranks).index(rank), len(weight_ranks)
            if backend == "nccl":
                options = dist.ProcessGroupNCCL.Options()
                options._timeout = timeout
                group = dist.ProcessGroupNCCL(prefix, index, size, options)
            else:
                group = dist.ProcessGroupGloo(prefix, index, size, timeout)
            self.weights = Channel(group, weight_ranks, rank, device)

    def barrier(self) -> None:
        """Every rank of the job has got here (before exit: rank 0's store outlives the others' use)."""
        self.objects.broadcast_object(None, src=0)
