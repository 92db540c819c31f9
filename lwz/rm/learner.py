"""The reward model's learner: a megatron-core backbone with a scalar head (`ScalarHead`), trained with
the Bradley-Terry loss `-log sigmoid(r(x, y_w) - r(x, y_l))` over TP/PP/DP.

Every rank is handed the same global batch of pairs (token ids of prompt + answer, as
`lwz.rm.model.encode` makes them); data-parallel rank d takes pairs d, d + DP, ... Both answers of a
pair stay in one micro-batch (chosen answers first, then their rejected twins), micro-batches hold at
most `actor.micro_batch_tokens` padded tokens (one pair may exceed it), longest first. The loss is
the sum over the batch's pairs divided by their number, so any layout takes the same step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lwz.actor.convert import export_hf_folder, read_hf_config
from lwz.actor.optim import LrSchedule, trainable_model
from lwz.errors import LwzError
from lwz.recipe.schema import ActorCfg, ModelCfg
from lwz.rm.scalar_head import reward_model_config

__all__ = ["RewardLearner", "Pair"]

log = logging.getLogger(__name__)

Pair = tuple[Sequence[int], Sequence[int]]  # (chosen, rejected) token ids, prompt included


@dataclass(frozen=True)
class _Micro:
    """One micro-batch: right-padded sequences [n, L] and the position of each one's last token."""

    tokens: torch.Tensor
    last: torch.Tensor
    pairs: int  # rows [0, pairs) are chosen answers, [pairs, 2 * pairs) their rejected twins (0 when scoring)


def _pad(sequences: Sequence[Sequence[int]], multiple: int, pairs: int) -> _Micro:
    width = -(-max(len(s) for s in sequences) // multiple) * multiple
    tokens = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
    return _Micro(tokens, torch.tensor([len(s) - 1 for s in sequences]), pairs)


def _groups(lengths: Sequence[int], rows_per_item: int, budget: int) -> list[list[int]]:
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


class RewardLearner:
    """The reward model with megatron DDP, its optimizer and LR schedule (build after `lwz.runtime` init)."""

    def __init__(self, model: ModelCfg, actor: ActorCfg, total_steps: int, pad_token_id: int | None):
        from megatron.core import parallel_state

        self.source = Path(model.path)
        self.hf_config = reward_model_config(read_hf_config(model.path), pad_token_id)
        self.actor = actor
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.model, self.optimizer, _ = trainable_model(self.hf_config, model.path, model.dtype, actor)
        self.schedule = LrSchedule.from_actor(actor, total_steps)
        self.optimizer_steps = 0
        self._multiple = parallel_state.get_tensor_model_parallel_world_size() if actor.sequence_parallel else 1
        self._device = next(self.model.parameters()).device

    def _run(self, micro: list[_Micro], loss_fn, forward_only: bool) -> list:
        """Megatron's schedule over `micro`; `loss_fn(micro, scores)` on the last stage gets each row's score."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        device = self._device

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
            forward_step_func=step, data_iterator=iter(micro), model=[self.model], num_microbatches=len(micro),
            seq_length=first[1], micro_batch_size=first[0], forward_only=forward_only,
            collect_non_loss_data=forward_only)  # fmt: skip

    def _replica_sum(self, values: torch.Tensor, over_dp: bool = True) -> torch.Tensor:
        """`values` from the last pipeline stage on every stage, summed over DP ranks (`over_dp`)."""
        from megatron.core import parallel_state

        if not parallel_state.is_pipeline_last_stage():
            values = torch.zeros_like(values)
        torch.distributed.all_reduce(values, group=parallel_state.get_pipeline_model_parallel_group())
        if over_dp:
            torch.distributed.all_reduce(values, group=parallel_state.get_data_parallel_group())
        return values

    def step(self, pairs: Sequence[Pair]) -> dict[str, float]:
        """One optimizer step on a global batch of pairs (the same on every rank); metrics on every rank."""
        if len(pairs) < self.dp_size:
            raise LwzError(None, "rm.pairs_per_step", f"{len(pairs)} pairs cannot feed {self.dp_size} DP ranks")
        mine = list(pairs[self.dp_rank::self.dp_size])
        groups = _groups([max(len(c), len(r)) for c, r in mine], 2, self.actor.micro_batch_tokens)
        micro = [_pad([mine[i][0] for i in g] + [mine[i][1] for i in g], self._multiple, len(g)) for g in groups]
        scale = len(micro) * self.dp_size  # the schedule divides by micro-batches, DDP averages over DP: undo both

        def loss_fn(m: _Micro, scores: torch.Tensor):
            margin = scores[:m.pairs] - scores[m.pairs:]
            loss = -F.logsigmoid(margin).sum() / len(pairs)
            return loss * scale, torch.stack([loss.detach(), (margin > 0).sum().float(), margin.detach().sum()])

        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        outputs = self._run(micro, loss_fn, forward_only=False)
        lr = self.schedule.apply(self.optimizer, self.optimizer_steps, self.actor.weight_decay)
        success, grad_norm, _ = self.optimizer.step()
        assert success, "the optimizer step failed (non-finite gradients)"
        self.optimizer_steps += 1
        sums = torch.stack(outputs).double().sum(0) if outputs else torch.zeros(3, dtype=torch.float64)
        sums = self._replica_sum(sums.to(self._device))
        return {"loss": sums[0].item(), "accuracy": sums[1].item() / len(pairs), "margin": sums[2].item() / len(pairs),
                "grad_norm": float(grad_norm), "lr": lr}  # fmt: skip

    @torch.no_grad()
    def scores(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """The score of each sequence (its last token's), on every rank; the DP ranks share the work."""
        mine = list(range(self.dp_rank, len(sequences), self.dp_size))
        values = torch.zeros(len(sequences), dtype=torch.float64, device=self._device)
        if mine:
            groups = _groups([len(sequences[i]) for i in mine], 1, self.actor.micro_batch_tokens)
            micro = [_pad([sequences[mine[i]] for i in g], self._multiple, 0) for g in groups]
            self.model.eval()
            outputs = self._run(micro, lambda m, scores: scores, forward_only=True)
            self.model.train()
            for g, out in zip(groups, outputs):
                values[[mine[i] for i in g]] = out.double().to(self._device)
        return self._replica_sum(values).tolist()

    def export(self, out: str | Path) -> Path:
        """Collective: write the HF sequence-classification folder (weights, config, tokenizer) at `out`."""
        return export_hf_folder(self.model, self.hf_config, out, source_dir=self.source)
