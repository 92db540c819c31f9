"""Dynamic sampling (DAPO): prompt groups whose rewards are all equal give every response a zero advantage,
so they carry no GRPO signal. They are dropped and the batch is filled with more groups from the
rollout, for at most `max_rounds` extra rounds; if the batch is still short, dropped groups fill it
with their responses out of the loss (the batch keeps its size, so data-parallel shards still divide).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

from lwz.batch import RolloutBatch

__all__ = ["DynamicSampling", "concat", "fill_with_signal", "groups_of", "signal_groups"]


def groups_of(batch: RolloutBatch) -> list[int]:
    """The batch's group ids in order of first appearance."""
    return list(dict.fromkeys(batch.group))


def signal_groups(batch: RolloutBatch, eps: float = 1e-12) -> list[int]:
    """Groups with at least one non-zero advantage."""
    return [g for g in groups_of(batch) if any(abs(a) > eps for a, h in zip(batch.advantages, batch.group) if h == g)]


def _select_groups(batch: RolloutBatch, groups: Sequence[int]) -> RolloutBatch:
    wanted = set(groups)
    return batch.select([i for i, g in enumerate(batch.group) if g in wanted])


def concat(batches: Sequence[RolloutBatch]) -> RolloutBatch:
    """One batch of `batches` in order, groups renumbered 0, 1, ...; an empty `loss_mask` means all in."""
    batches = [b for b in batches if len(b)]
    out: dict = {}
    for f in fields(RolloutBatch):
        values = [getattr(b, f.name) for b in batches]
        if f.name == "rewards":
            out[f.name] = {k: [x for v in values for x in v[k]] for k in values[0]} if values else {}
        elif f.name == "loss_mask" and any(values):
            out[f.name] = [x for b, v in zip(batches, values) for x in (v or [True] * len(b))]
        elif f.name == "group":
            out[f.name] = []
        else:
            out[f.name] = [x for v in values for x in v] if all(len(v) for v in values) else []
    merged = RolloutBatch(**out)
    offset = 0
    for b in batches:
        local = {g: offset + k for k, g in enumerate(groups_of(b))}
        merged.group.extend(local[g] for g in b.group)
        offset += len(local)
    return merged


@dataclass
class DynamicSampling:
    """What dynamic sampling did in a step."""

    dropped_groups: int = 0
    rounds: int = 0
    filler_groups: int = 0

    def metrics(self) -> dict[str, float]:
        return {"rollout/dropped_zero_variance_groups": float(self.dropped_groups),
                "rollout/sampling_rounds": float(self.rounds), "rollout/filler_groups": float(self.filler_groups)}


def fill_with_signal(batch: RolloutBatch, more: Callable[[int], RolloutBatch], groups_wanted: int,
                     max_rounds: int) -> tuple[RolloutBatch, DynamicSampling]:
    """`groups_wanted` groups with signal from `batch` and up to `max_rounds` calls of `more(n)` (n more scored
    groups); short of them, zero-signal groups fill the batch out of the loss."""
    stats = DynamicSampling()
    kept, dropped = [], []

    def sort(b: RolloutBatch) -> None:
        signal = signal_groups(b)
        kept.append(_select_groups(b, signal))
        dropped.append(_select_groups(b, [g for g in groups_of(b) if g not in set(signal)]))
        stats.dropped_groups += len(groups_of(b)) - len(signal)

    sort(batch)
    while (have := sum(len(groups_of(b)) for b in kept)) < groups_wanted and stats.rounds < max_rounds:
        stats.rounds += 1
        sort(more(groups_wanted - have))
    merged = concat(kept)
    have = len(groups_of(merged))
    if have > groups_wanted:
        merged = _select_groups(merged, range(groups_wanted))
    elif have < groups_wanted:
        filler = concat(dropped)
        filler = _select_groups(filler, range(groups_wanted - have))
        filler = replace(filler, loss_mask=[False] * len(filler))
        stats.filler_groups = groups_wanted - have
        merged = concat([merged, filler])
    return merged, stats
