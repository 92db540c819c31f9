"""The continual-pretraining learner: next-token training of the actor's megatron model on packed rows.

Every rank is handed the same global batch of rows (`lwz.cpt.packing.PackedRow`); data-parallel rank d
takes rows d, d + DP, ... Each micro-batch puts `actor.micro_batch_tokens // seq_length` rows side by
side in one THD sequence (`packed_batch`), so attention and RoPE restart at every end-of-document
token; megatron's own language-model loss (vocab-parallel cross entropy) gives each position's loss,
masked at EOD inputs and divided by the batch's loss tokens, so every layout takes the same step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from lwz.actor.convert import export_hf_folder, read_hf_config
from lwz.actor.learner import Learner
from lwz.cpt.packing import PackedRow, packed_batch
from lwz.errors import LwzError
from lwz.recipe.schema import ActorCfg, ModelCfg

__all__ = ["PretrainLearner"]



class PretrainLearner(Learner):
    """The model with megatron DDP, its optimizer and LR schedule (build after `lwz.runtime` init)."""

    def __init__(self, model: ModelCfg, actor: ActorCfg, total_steps: int):
        super().__init__(read_hf_config(model.path), model, actor, total_steps)
        self.source = model.path

    def _run(self, rows: Sequence[PackedRow], normalizer: float, forward_only: bool) -> torch.Tensor:
        """Megatron's schedule over this rank's rows; the summed (loss, loss tokens) of the replica."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        per_micro = max(1, self.actor.micro_batch_tokens // len(rows[0].tokens))
        micro = [packed_batch(rows[i:i + per_micro]) for i in range(0, len(rows), per_micro)]
        scale = len(micro) * self.dp_size  # the schedule divides by micro-batches, DDP averages over DP
        device = self._device

        def step(data_iterator, module):
            tokens, labels, mask, params = next(data_iterator)
            params = dataclasses.replace(params, cu_seqlens_q=params.cu_seqlens_q.to(device),
                                         cu_seqlens_kv=params.cu_seqlens_kv.to(device))  # TE reads them on the GPU
            output = module(tokens.to(device), None, None, labels=labels.to(device), packed_seq_params=params)

            def loss_fn(per_token, non_loss_data=False):
                m = mask.to(per_token.device)
                loss = (per_token.float() * m).sum() / normalizer
                return loss * scale, torch.stack([loss.detach(), m.sum()])

            return output, loss_fn

        outputs = get_forward_backward_func()(
            forward_step_func=step, data_iterator=iter(micro), model=[self.model], num_microbatches=len(micro),
            seq_length=micro[0][0].shape[1], micro_batch_size=1, forward_only=forward_only)  # fmt: skip
        return self.replica_sums(outputs, 2)

    def _share(self, rows: Sequence[PackedRow]) -> tuple[list[PackedRow], float]:
        if len(rows) < self.dp_size:
            raise LwzError(None, "cpt.rows_per_step", f"{len(rows)} rows cannot feed {self.dp_size} DP ranks")
        return list(rows[self.dp_rank::self.dp_size]), float(max(1.0, sum(r.loss_mask.sum() for r in rows)))

    def step(self, rows: Sequence[PackedRow]) -> dict[str, float]:
        """One optimizer step on a global batch of rows (the same on every rank); metrics on every rank."""
        mine, normalizer = self._share(rows)
        self.zero_grad()
        sums = self._run(mine, normalizer, forward_only=False)
        return {"loss": sums[0].item(), "tokens": sums[1].item(), **self.optimizer_step()}

    @torch.no_grad()
    def loss(self, rows: Sequence[PackedRow]) -> float:
        """The mean next-token loss of held-out rows (every rank)."""
        mine, normalizer = self._share(rows)
        self.model.eval()
        sums = self._run(mine, normalizer, forward_only=True)
        self.model.train()
        return sums[0].item()

    def export(self, out) -> None:
        """Collective: the model as an HF folder (tokenizer copied from the base model)."""
        export_hf_folder(self.model, self.hf_config, out, source_dir=self.source)
