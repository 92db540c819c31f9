"""An engine role (the rollout engines, a reward model's engines): one handle that spreads a step's work
over the role's engines and gathers every engine's results on every rank (SPMD: all ranks call it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch.distributed as dist

__all__ = ["EngineRole", "share"]

T = TypeVar("T")
R = TypeVar("R")


def share(count: int, engines: int, engine: int) -> range:
    """Contiguous slice of `count` items for `engine` (the first engines take one more if uneven)."""
    base, extra = divmod(count, engines)
    start = engine * base + min(engine, extra)
    return range(start, start + base + (engine < extra))


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


@dataclass(frozen=True)
class EngineRole:
    """The engines of one role: `engine_ranks[e]` are the ranks engine e spans (from the plan)."""

    name: str
    engine_ranks: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, name: str, engine_ranks: Sequence[Sequence[int]]) -> EngineRole:
        return cls(name, tuple(tuple(ranks) for ranks in engine_ranks))

    @classmethod
    def local(cls, name: str) -> EngineRole:
        """One engine in this process alone (outside a multi-rank job)."""
        return cls.of(name, [[_rank()]])

    @property
    def index(self) -> int:
        """The engine this rank is part of."""
        rank = _rank()
        return next(e for e, ranks in enumerate(self.engine_ranks) if rank in ranks)

    @property
    def distributed(self) -> bool:
        """Whether the engines are built inside a multi-rank job (vLLM's `external_launcher`)."""
        return dist.is_initialized() and dist.get_world_size() > 1

    def each(self, work: Callable[[int], R]) -> list[R]:
        """Every engine runs `work(engine index)`; every rank returns the engines' results in engine order
        (each engine's from its first rank)."""
        index = self.index
        local = work(index)
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return [local]
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local if _rank() == self.engine_ranks[index][0] else None)
        return [gathered[ranks[0]] for ranks in self.engine_ranks]

    def run(self, items: Sequence[T], work: Callable[[list[T], int], list[R]]) -> list[R]:
        """Every engine runs `work(its share of items, engine index)` (one result per item); every rank
        returns all results in the order of `items`."""
        def engine_share(index: int) -> list[R]:
            mine = [items[i] for i in share(len(items), len(self.engine_ranks), index)]
            local = work(mine, index) if mine else []
            assert len(local) == len(mine), f"{self.name}: {len(local)} results for {len(mine)} items"
            return local

        return [result for part in self.each(engine_share) for result in part]
