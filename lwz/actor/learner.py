"""What every model lwz trains shares (the GRPO policy, the reward model, continual pretraining): this
rank's shard of a megatron-core model with DDP, its optimizer and LR schedule, one optimizer step, and the
sum of a step's metrics over the replica (from the last pipeline stage, over data-parallel ranks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lwz.actor.optim import LrSchedule, trainable_model
from lwz.recipe.schema import ActorCfg, ModelCfg

__all__ = ["Learner", "replica_sum"]


class Learner:
    """A trained model (build after `lwz.runtime` init): `hf_config` with the weights of `model.path`, the
    actor section's parallel, optimizer and schedule settings, `total_steps` optimizer steps."""

    def __init__(self, hf_config: dict, model: ModelCfg, actor: ActorCfg, total_steps: int):
        from megatron.core import parallel_state

        self.hf_config, self.actor = hf_config, actor
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.model, self.optimizer, self.dtype = trainable_model(hf_config, model.path, model.dtype, actor)
        self.schedule = LrSchedule.from_actor(actor, total_steps)
        self.optimizer_steps = 0
        self._device = next(self.model.parameters()).device

    def zero_grad(self) -> None:
        """Before a step's forward-backward passes."""
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()

    def optimizer_step(self) -> dict[str, float]:
        """The scheduled learning rate, then one optimizer step; its `grad_norm` and `lr` (megatron's
        ChainedOptimizer reports the norm before clipping)."""
        lr = self.schedule.apply(self.optimizer, self.optimizer_steps, self.actor.weight_decay)
        success, grad_norm, _ = self.optimizer.step()
        assert success, "the optimizer step failed (non-finite gradients)"
        self.optimizer_steps += 1
        return {"grad_norm": float(grad_norm), "lr": lr}

    def replica_sums(self, outputs: Sequence[torch.Tensor], width: int) -> torch.Tensor:
        """The micro-batches' metric sums (`width` each, on the last pipeline stage) summed over the replica."""
        sums = torch.stack(list(outputs)).double().sum(0) if outputs else torch.zeros(width, dtype=torch.float64)
        return replica_sum(sums.to(self._device))


def replica_sum(values: torch.Tensor) -> torch.Tensor:
    """`values` from the last pipeline stage on every stage, summed over DP ranks."""
    from megatron.core import parallel_state

    if not parallel_state.is_pipeline_last_stage():
        values = torch.zeros_like(values)
    torch.distributed.all_reduce(values, group=parallel_state.get_pipeline_model_parallel_group())
    torch.distributed.all_reduce(values, group=parallel_state.get_data_parallel_group())
    return values
