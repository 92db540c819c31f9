"""The reward model's head on a megatron-core GPT backbone: one score per position (no vocabulary).

`ScalarHead` takes the place of `GPTModel.output_layer` on the last pipeline stage and is called the
same way; the model then returns [batch, seq, 1] scores, of which the loss reads each sequence's
last token (as HF's `*ForSequenceClassification` and vLLM's pooling do). The head is replicated over
tensor-parallel ranks: every rank computes the same scores from the whole final hidden state, so its
input gradient is the full one on every rank (no TP reduction) and its weight counts once in the
gradient norm (megatron counts parameters without `tensor_model_parallel` on TP rank 0 only).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

__all__ = ["ScalarHead", "reward_model_config", "has_scalar_head", "HEAD_INIT_SEED"]

HEAD_INIT_SEED = 0  # a fresh head is the same on every rank and in every layout


class ScalarHead(torch.nn.Module):
    """`score = hidden @ weight.T` with `weight` [1, hidden] (HF's `score.weight`), same on every TP rank."""

    def __init__(self, hidden_size: int, init_std: float, sequence_parallel: bool, dtype: torch.dtype,
                 device: torch.device | str = "cpu"):
        super().__init__()
        generator = torch.Generator().manual_seed(HEAD_INIT_SEED)
        weight = torch.randn(1, hidden_size, generator=generator) * init_std
        self.weight = torch.nn.Parameter(weight.to(device=device, dtype=dtype))
        self.sequence_parallel = sequence_parallel

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor | None = None, runtime_gather_output: Any = None
                ) -> tuple[torch.Tensor, None]:
        """[S, B, H] (sequence parallel: this rank's S / TP positions) -> ([S, B, 1] scores, None)."""
        from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

        if self.sequence_parallel:  # every rank needs every position; each takes its part of the gradient back
            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False)
        return hidden @ self.weight.t(), None


def reward_model_config(base_config: dict[str, Any], pad_token_id: int | None) -> dict[str, Any]:
    """The HF `config.json` of a scalar reward model (`<Family>ForSequenceClassification`, one label) on
    the backbone of `base_config` (a causal LM's or a reward model's)."""
    config = copy.deepcopy(base_config)
    family = {"qwen2": "Qwen2", "llama": "Llama"}.get(config.get("model_type"), str(config.get("model_type")))
    config.update(architectures=[f"{family}ForSequenceClassification"], num_labels=1, id2label={"0": "LABEL_0"},
                  label2id={"LABEL_0": 0}, tie_word_embeddings=False)
    if pad_token_id is not None:
        config["pad_token_id"] = pad_token_id
    return config


def has_scalar_head(hf_config: dict[str, Any]) -> bool:
    """Whether an HF config is a sequence classifier's (a reward model's), not a causal LM's."""
    return any(str(a).endswith("ForSequenceClassification") for a in hf_config.get("architectures") or ())
