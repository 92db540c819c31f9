"""RMSNorm for megatron's local layer spec that also works with sequence parallelism.

Megatron's local spec wraps `torch.nn.RMSNorm`, which refuses `sequence_parallel` (its weight's
gradient would stay per-rank). With sequence parallelism every TP rank normalises a different slice
of the sequence, so the weight carries megatron's `sequence_parallel` attribute and
`finalize_model_grads` all-reduces its gradient over the TP group, as transformer-engine's norms do.
Without sequence parallelism it computes exactly what `torch.nn.RMSNorm` computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_config import TransformerConfig

__all__ = ["RMSNorm"]


class RMSNorm(torch.nn.Module):
    """`weight * x / rms(x)` over the last dimension (the spec's `input_layernorm`, `pre_mlp_layernorm`
    and final norm); the extra keyword arguments megatron passes are accepted and unused."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_unused):
        super().__init__()
        assert config.normalization == "RMSNorm", f"{config.normalization} is not RMSNorm"
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        setattr(self.weight, "sequence_parallel", config.sequence_parallel)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(hidden, self.weight.shape, self.weight, self.eps)
