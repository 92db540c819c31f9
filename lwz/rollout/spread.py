"""Spread a step's prompts over the rollout engines and gather every engine's completions."""

from __future__ import annotations

from collections.abc import Sequence

import torch.distributed as dist

from lwz.rollout.vllm_engine import Completion, SamplingSettings, VllmEngine


def share(count: int, engines: int, engine: int) -> range:
    """Contiguous slice of `count` prompts for `engine` (the first engines take one more if uneven)."""
    base, extra = divmod(count, engines)
    start = engine * base + min(engine, extra)
    return range(start, start + base + (engine < extra))


def generate_on_engines(engine: VllmEngine, prompts: Sequence[str], seed: int, sampling: SamplingSettings,
                        engine_ranks: Sequence[Sequence[int]]) -> list[list[Completion]]:
    """Completions for all `prompts` on every rank; each engine writes its share (SPMD, all ranks call)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    index = next(i for i, ranks in enumerate(engine_ranks) if rank in ranks)
    mine = share(len(prompts), len(engine_ranks), index)
    local = engine.generate([prompts[i] for i in mine], sampling, seed + index) if len(mine) else []
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return local
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local if rank == engine_ranks[index][0] else None)
    return [groups for ranks in engine_ranks for groups in gathered[ranks[0]]]
