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
from pathlib import Path

import torch
import torch.nn.functional as F

from lwz.actor.convert import export_hf_folder, read_hf_config
from lwz.actor.learner import Learner
from lwz.errors import LwzError
from lwz.recipe.schema import ActorCfg, ModelCfg
from lwz.rm.scalar_head import reward_model_config
from lwz.rm.scoring import Micro, pad_rows, run_schedule, score_sequences, token_groups

__all__ = ["RewardLearner", "Pair"]

log = logging.getLogger(__name__)

Pair = tuple[Sequence[int], Sequence[int]]  # (chosen, rejected) token ids, prompt included


class RewardLearner(Learner):
    """The reward model with megatron DDP, its optimizer and LR schedule (build after `lwz.runtime` init)."""

    def __init__(self, model: ModelCfg, actor: ActorCfg, total_steps: int, pad_token_id: int | None):
        from megatron.core import parallel_state

        super().__init__(reward_model_config(read_hf_config(model.path), pad_token_id), model, actor, total_steps)
        self.source = Path(model.path)
        self._multiple = parallel_state.get_tensor_model_parallel_world_size() if actor.sequence_parallel else 1

    def step(self, pairs: Sequence[Pair]) -> dict[str, float]:
        """One optimizer step on a global batch of pairs (the same on every rank); metrics on every rank."""
        if len(pairs) < self.dp_size:
            raise LwzError(None, "rm.pairs_per_step", f"{len(pairs)} pairs cannot feed {self.dp_size} DP ranks")
        mine = list(pairs[self.dp_rank::self.dp_size])
        groups = token_groups([max(len(c), len(r)) for c, r in mine], 2, self.actor.micro_batch_tokens)
        micro = [pad_rows([mine[i][0] for i in g] + [mine[i][1] for i in g], self._multiple, len(g)) for g in groups]
        scale = len(micro) * self.dp_size  # the schedule divides by micro-batches, DDP averages over DP: undo both

        def loss_fn(m: Micro, scores: torch.Tensor):
            margin = scores[:m.pairs] - scores[m.pairs:]
            loss = -F.logsigmoid(margin).sum() / len(pairs)
            return loss * scale, torch.stack([loss.detach(), (margin > 0).sum().float(), margin.detach().sum()])

        self.zero_grad()
        outputs = run_schedule(self.model, micro, loss_fn, forward_only=False)
        stepped = self.optimizer_step()
        sums = self.replica_sums(outputs, 3)
        return {"loss": sums[0].item(), "accuracy": sums[1].item() / len(pairs), "margin": sums[2].item() / len(pairs),
                **stepped}

    def scores(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """The score of each sequence (its last token's), on every rank; the DP ranks share the work."""
        return score_sequences(self.model, sequences, self.actor.micro_batch_tokens, self._multiple)

    def export(self, out: str | Path) -> Path:
        """Collective: write the HF sequence-classification folder (weights, config, tokenizer) at `out`."""
        return export_hf_folder(self.model, self.hf_config, out, source_dir=self.source)
