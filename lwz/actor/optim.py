"""The actor's optimizer (megatron-core Adam(W), distributed over DP when asked) and LR schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lwz.recipe.schema import ActorCfg

__all__ = ["LrSchedule", "build_optimizer", "training_wrappers", "trainable_model", "DTYPES"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def trainable_model(hf_config: dict, weights: str, dtype_name: str, actor: ActorCfg):
    """(DDP model, optimizer, dtype): this rank's shard of the megatron model of `hf_config` with the HF
    weights of `weights` (a scalar-head config gets a reward model), the actor's parallel and
    recompute settings, ready to train with micro-batches of varying shape."""
    from lwz.actor.convert import load_hf_into_megatron
    from lwz.actor.model import build_gpt_model
    from lwz.errors import LwzError

    if dtype_name not in DTYPES:
        raise LwzError(None, "model.dtype", f"'{dtype_name}' is not supported (allowed: fp32, bf16)")
    dtype = DTYPES[dtype_name]
    overrides: dict = {"sequence_parallel": actor.sequence_parallel}
    if actor.recompute == "full":
        overrides.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    net = build_gpt_model(hf_config, dtype=dtype, config_overrides=overrides)
    # Micro-batches differ in shape: pipeline stages exchange shapes first. Set after construction:
    # TransformerConfig rejects it with its default MoE token dispatcher.
    net.config.variable_seq_lengths = True
    load_hf_into_megatron(net, weights, hf_config)
    return (*training_wrappers(net, actor, dtype), dtype)


def training_wrappers(model: torch.nn.Module, actor: ActorCfg, dtype: torch.dtype):
    """(megatron DDP around `model`, its optimizer): fp32 gradient reduction, the recipe's optimizer
    sharding (also at DP=1, so a checkpoint keeps one optimizer format when a resume changes DP)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads

    distributed = actor.distributed_optimizer
    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                               use_distributed_optimizer=distributed)  # fmt: skip
    wrapped = DistributedDataParallel(config=model.config, ddp_config=ddp_config, module=model)
    model.config.finalize_model_grads_func = finalize_model_grads
    return wrapped, build_optimizer(wrapped, actor, bf16=dtype == torch.bfloat16, distributed=distributed)


def build_optimizer(model: torch.nn.Module, actor: ActorCfg, *, bf16: bool, distributed: bool):
    """megatron-core's AdamW over the (DDP-wrapped) `model` with the recipe's settings.

    `distributed` shards Adam states over data-parallel ranks (megatron's distributed optimizer);
    with `bf16` the optimizer keeps fp32 main weights. Norms and biases get no weight decay. The Adam is
    torch's on every machine: megatron-core picks transformer-engine's FusedAdam when TE is installed (the
    GPU stack), whose states and checkpoint load differ from the torch Adam the CPU tests run
    (lwz.actor.optim_checkpoint); one class everywhere keeps the tested path the cluster's.
    """
    import megatron.core.optimizer as megatron_optimizer
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config = OptimizerConfig(
        optimizer="adam",
        lr=actor.lr,
        min_lr=actor.min_lr,
        weight_decay=actor.weight_decay,
        adam_beta1=actor.adam_beta1,
        adam_beta2=actor.adam_beta2,
        adam_eps=actor.adam_eps,
        clip_grad=actor.grad_clip,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=distributed,
    )
    chosen = megatron_optimizer.USING_PYTORCH_OPTIMIZER
    megatron_optimizer.USING_PYTORCH_OPTIMIZER = True
    try:
        return get_megatron_optimizer(config, [model])
    finally:
        megatron_optimizer.USING_PYTORCH_OPTIMIZER = chosen


@dataclass(frozen=True)
class LrSchedule:
    """Linear warm-up to `peak`, then constant, linear or cosine decay to `min_lr` at `total_steps`.

    `lr(k)` is the rate of optimizer step k (0-based): warm-up gives peak * (k + 1) / warmup_steps,
    so the first step already learns.
    """

    peak: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    style: str  # constant | linear | cosine

    def __post_init__(self):
        assert self.style in ("constant", "linear", "cosine"), f"unknown LR schedule {self.style!r}"

    @classmethod
    def from_actor(cls, actor: ActorCfg, total_steps: int) -> LrSchedule:
        return cls(actor.lr, actor.min_lr, actor.warmup_steps, total_steps, actor.lr_schedule)

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.style == "constant":
            return self.peak
        ratio = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        coeff = 1.0 - ratio if self.style == "linear" else 0.5 * (1.0 + math.cos(math.pi * ratio))
        return self.min_lr + coeff * (self.peak - self.min_lr)

    def apply(self, optimizer, step: int, weight_decay: float) -> float:
        """Set every parameter group's LR (and weight decay, scaled by megatron's wd_mult) for `step`."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = weight_decay * group.get("wd_mult", 1.0)
        return lr
