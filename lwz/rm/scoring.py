"""Scores of token sequences under a megatron-core reward model (a scalar head on the last token), over the
actor's TP/PP/DP grid: what the RM learner evaluates with and what the loop's `writing_rm` reward serves.

`RewardModelScorer` is the loop's: a frozen reward model on the actor's ranks (the grid the actor's
megatron groups give it), its weights in host memory outside the reward phase (`HostOffloaded`), so it
takes no GPU memory from the rollout engine or the update; the data-parallel ranks share the sequences and
every rank gets every score. Its scores are the exported HF sequence classifier's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lwz.actor.learner import replica_sum

__all__ = ["Micro", "pad_rows", "token_groups", "run_schedule", "score_sequences", "RewardModelScorer"]


@dataclass(frozen=True)
class Micro:
    """One micro-batch: right-padded sequences [n, L] and the position of each one's last token."""

    tokens: torch.Tensor
    last: torch.Tensor
    pairs: int  # rows [0, pairs) are chosen answers, [pairs, 2 * pairs) their rejected twins (0 when scoring)


def pad_rows(sequences: Sequence[Sequence[int]], multiple: int, pairs: int) -> Micro:
    """Right-pad `sequences` into one micro-batch whose length is a multiple of `multiple`."""
    width = -(-max(len(s) for s in sequences) // multiple) * multiple
    tokens = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
    return Micro(tokens, torch.tensor([len(s) - 1 for s in sequences]), pairs)


def token_groups(lengths: Sequence[int], rows_per_item: int, budget: int) -> list[list[int]]:
    """Index groups, longest first, each at most `budget` padded tokens (rows x longest); one item alone may
    exceed it."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if current and (len(current) + 1) * rows_per_item * max(longest, lengths[i]) > budget:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    return groups + [current] if current else groups


def run_schedule(model: torch.nn.Module, micro: list[Micro], loss_fn: Callable, forward_only: bool) -> list:
    """Megatron's schedule over `micro`; `loss_fn(micro, scores)` on the last stage gets each row's score."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    device = next(model.parameters()).device

    def step(data_iterator, module):
        m = next(data_iterator)
        tokens = m.tokens.to(device)
        rows, length = tokens.shape
        output = module(tokens, torch.arange(length, device=device).expand(rows, length), None)

        def on_output(out, non_loss_data=False):
            return loss_fn(m, out[torch.arange(rows, device=device), m.last.to(device), 0].float())

        return output, on_output

    first = micro[0].tokens.shape
    return get_forward_backward_func()(
        forward_step_func=step, data_iterator=iter(micro), model=[model], num_microbatches=len(micro),
        seq_length=first[1], micro_batch_size=first[0], forward_only=forward_only,
        collect_non_loss_data=forward_only)  # fmt: skip


@torch.no_grad()
def score_sequences(model: torch.nn.Module, sequences: Sequence[Sequence[int]], micro_batch_tokens: int,
                    multiple: int) -> list[float]:
    """Collective: the score of each sequence (its last token's) on every rank; the DP ranks share the work."""
    from megatron.core import parallel_state

    dp_rank, dp = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    device = next(model.parameters()).device
    mine = list(range(dp_rank, len(sequences), dp))
    values = torch.zeros(len(sequences), dtype=torch.float64, device=device)
    if mine:
        groups = token_groups([len(sequences[i]) for i in mine], 1, micro_batch_tokens)
        micro = [pad_rows([sequences[mine[i]] for i in g], multiple, 0) for g in groups]
        training = model.training
        model.eval()
        outputs = run_schedule(model, micro, lambda m, scores: scores, forward_only=True)
        model.train(training)
        for g, out in zip(groups, outputs):
            values[[mine[i] for i in g]] = out.double().to(device)
    return replica_sum(values).tolist()


class RewardModelScorer:
    """A reward model's HF folder on this rank's shard of the actor's grid, frozen, in host memory outside
    `scores` (build after `lwz.runtime` init; collective: every actor rank builds and scores together).

    `micro_batch_tokens` bounds one forward's padded tokens (the actor's setting); `sequence_parallel`
    follows the actor's megatron configuration.
    """

    def __init__(self, folder: str | Path, *, dtype: str, micro_batch_tokens: int, sequence_parallel: bool):
        from megatron.core import parallel_state

        from lwz.actor.convert import load_hf_into_megatron, read_hf_config
        from lwz.actor.model import build_gpt_model
        from lwz.actor.optim import DTYPES
        from lwz.runtime.offload import HostOffloaded

        config = read_hf_config(folder)
        model = build_gpt_model(config, dtype=DTYPES[dtype], config_overrides={"sequence_parallel": sequence_parallel})
        model.config.variable_seq_lengths = True  # scoring batches differ in shape: stages exchange shapes first
        load_hf_into_megatron(model, folder, config)
        self.model = model.requires_grad_(False).eval()
        self.weights = HostOffloaded(model, "the reward model")
        self.micro_batch_tokens = micro_batch_tokens
        self._multiple = parallel_state.get_tensor_model_parallel_world_size() if sequence_parallel else 1

    def scores(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Collective: each token sequence's score, on every rank, with the weights on the GPU for the call."""
        with self.weights.on_gpu("reward"):
            return score_sequences(self.model, sequences, self.micro_batch_tokens, self._multiple)
