"""The one batch type that flows through the loop: a step's sequences, their rewards and advantages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class PaddedTokens:
    """Right-padded token ids of some sequences, with response positions marked on the labels.

    tokens[b, :n_b] is prompt + response; label position p predicts tokens[b, p + 1], and
    response_mask[b, p] is 1 where that label is a response token.
    """

    tokens: torch.Tensor          # [B, L] long
    response_mask: torch.Tensor   # [B, L - 1] float
    prompt_lengths: list[int]
    response_lengths: list[int]

    def scatter(self, per_sequence: Sequence[torch.Tensor]) -> torch.Tensor:
        """Place per-sequence response values into a [B, L - 1] tensor at the response positions."""
        out = torch.zeros(self.response_mask.shape, dtype=torch.float32)
        for b, values in enumerate(per_sequence):
            start = self.prompt_lengths[b] - 1
            out[b, start:start + self.response_lengths[b]] = values.float()
        return out

    def gather(self, per_position: torch.Tensor) -> list[torch.Tensor]:
        """The response part of a [B, L - 1] tensor, one 1-D tensor per sequence."""
        return [per_position[b, p - 1:p - 1 + r] for b, (p, r) in
                enumerate(zip(self.prompt_lengths, self.response_lengths))]


@dataclass
class RolloutBatch:
    """All sequences of one step (or a slice of them); lists are indexed by sequence."""

    prompt_index: list[int]
    group: list[int]
    samples: list[dict]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]
    rollout_logprobs: list[list[float]]
    rewards: dict[str, list[float]] = field(default_factory=dict)
    advantages: list[float] = field(default_factory=list)
    old_logprobs: list[torch.Tensor] = field(default_factory=list)
    ref_logprobs: list[torch.Tensor] = field(default_factory=list)
    loss_mask: list[bool] = field(default_factory=list)  # False: out of the loss (empty: every sequence in)
    stale_tokens: list[int] = field(default_factory=list)  # leading response tokens sampled under older weights
    versions: list[list[int]] = field(default_factory=list)  # the policy version (updates) of each response token

    def to_state(self) -> dict:
        """The batch before the actor has scored it, as plain lists (a checkpoint keeps a one-step-off
        rollout's next batch); the actor's old and reference logprobs are computed later and not kept."""
        assert not self.old_logprobs and not self.ref_logprobs, "only an unscored rollout batch is kept"
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("old_logprobs", "ref_logprobs")}

    @classmethod
    def from_state(cls, state: dict) -> RolloutBatch:
        return cls(**state)

    def stale(self, i: int) -> int:
        """How many of sequence i's first response tokens came from older weights (partial rollout)."""
        return self.stale_tokens[i] if self.stale_tokens else 0

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def select(self, indices: Sequence[int]) -> RolloutBatch:
        """The sequences at `indices`, every per-sequence field sliced alike."""
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                picked[f.name] = {k: [v[i] for i in indices] for k, v in value.items()}
            else:
                picked[f.name] = [value[i] for i in indices] if len(value) else []
        return replace(self, **picked)

    def in_loss(self, i: int) -> bool:
        """Whether sequence i's tokens count in the loss (`loss_mask`, e.g. `algo.mask_truncated`)."""
        return not self.loss_mask or self.loss_mask[i]

    def shard(self, rank: int, world: int) -> RolloutBatch:
        """This data-parallel rank's share, balanced by tokens: equal sequence counts (the length must divide
        by `world`), longest sequences first to the rank with the fewest tokens so far; batch order kept."""
        assert len(self) % world == 0, f"{len(self)} sequences do not divide across {world} ranks"
        size, loads, parts = len(self) // world, [0] * world, [[] for _ in range(world)]
        for i in sorted(range(len(self)), key=lambda i: (-self.sequence_length(i), i)):
            r = min((r for r in range(world) if len(parts[r]) < size), key=lambda r: (loads[r], r))
            parts[r].append(i)
            loads[r] += self.sequence_length(i)
        return self.select(sorted(parts[rank]))

    def chunks(self, count: int) -> list[RolloutBatch]:
        """`count` equal consecutive slices (the mini-batches: whole prompt groups stay together)."""
        size = len(self) // count
        assert size * count == len(self), f"{len(self)} sequences do not split into {count} mini-batches"
        return [self.select(range(i * size, (i + 1) * size)) for i in range(count)]

    def sequence_length(self, i: int) -> int:
        return len(self.prompt_ids[i]) + len(self.response_ids[i])

    def micro_batches(self, token_budget: int) -> list[list[int]]:
        """Index groups whose padded size (count x longest) stays within `token_budget`, filled in order of
        length (longest first), so sequences of like length share a micro-batch and little is padding."""
        groups: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in sorted(range(len(self)), key=lambda i: (-self.sequence_length(i), i)):
            n = self.sequence_length(i)
            assert n <= token_budget, f"a sequence of {n} tokens exceeds the {token_budget}-token micro-batch"
            if current and (len(current) + 1) * max(longest, n) > token_budget:
                groups.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, n)
        if current:
            groups.append(current)
        return groups

    def has_rollout_logprobs(self) -> bool:
        """Whether every response token carries the engine's logprob."""
        return len(self.rollout_logprobs) == len(self) and all(
            len(lp) == len(r) for lp, r in zip(self.rollout_logprobs, self.response_ids))

    def padded(self, indices: Sequence[int], pad_id: int = 0, multiple: int = 1) -> PaddedTokens:
        """Right-padded tokens and the response mask of the sequences at `indices` (the width rounded up
        to a multiple of `multiple`)."""
        seqs = [self.prompt_ids[i] + self.response_ids[i] for i in indices]
        width = -(-max(len(s) for s in seqs) // multiple) * multiple
        tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(seqs), width - 1)
        for b, (i, seq) in enumerate(zip(indices, seqs)):
            tokens[b, :len(seq)] = torch.tensor(seq)
            p, r = len(self.prompt_ids[i]), len(self.response_ids[i])
            mask[b, p - 1:p - 1 + r] = 1.0
        return PaddedTokens(tokens, mask, [len(self.prompt_ids[i]) for i in indices],
                            [len(self.response_ids[i]) for i in indices])
