"""Causal megatron core attention on PyTorch's `scaled_dot_product_attention` (for the local spec).

Megatron's local `DotProductAttention` materialises the [b, heads, s, s] score matrix and applies a
boolean [s, s] mask; `SdpaAttention` hands causal attention to PyTorch's fused kernels instead
(flash attention where the device and dtype allow), with grouped-query attention done by the
kernel (`enable_gqa`) rather than by copying key / value heads. It needs no attention mask: the
batches are causal and right-padded, and padding at the end never influences earlier positions.
Packed documents (continual pretraining) come as megatron's `PackedSeqParams` in the THD layout, as
transformer-engine takes them: attention stays within each document (a block-diagonal causal mask).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig

__all__ = ["SdpaAttention"]


class SdpaAttention(MegatronModule):
    """Drop-in `core_attention` for causal self-attention (no parameters, checkpoints unchanged).

    Takes query [s, b, heads, head_dim] and key / value [s, b, kv_heads, head_dim] (this TP rank's
    heads) and returns [s, b, heads * head_dim], like megatron's `DotProductAttention`.
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: ProcessGroupCollection | None = None,
    ):
        """Megatron's `core_attention` builder arguments; `layer_number`, `attention_type`,
        `cp_comm_type` and `pg_collection` are not needed (heads come from the tensor shapes).
        Settings this kernel does not implement are refused."""
        super().__init__(config=config)
        dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        unsupported = {
            "attn_mask_type must be causal": attn_mask_type != AttnMaskType.causal,
            "attention_dropout must be 0": dropout != 0.0,
            "context_parallel_size must be 1": config.context_parallel_size != 1,
            "softmax_type must be vanilla": config.softmax_type != "vanilla",
            "window_size must be unset": config.window_size is not None,
        }
        problems = [what for what, bad in unsupported.items() if bad]
        if problems:
            raise ValueError(f"SdpaAttention: {'; '.join(problems)}")
        # apply_query_key_layer_scaling divides the scores by layer_number and the softmax
        # multiplies them back, so the scale is 1/sqrt(head_dim) either way.
        default_scale = 1.0 / math.sqrt(config.kv_channels)
        self.softmax_scale = default_scale if softmax_scale is None else softmax_scale

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: PackedSeqParams | None = None,
    ) -> torch.Tensor:
        """Causal attention of [s, b, heads, d] queries over [s, b, kv_heads, d] keys and values."""
        if attention_mask is not None:
            raise ValueError("SdpaAttention is causal: pass attention_mask=None")
        if attn_mask_type not in (None, AttnMaskType.causal):
            raise ValueError(f"SdpaAttention is causal: got attn_mask_type {attn_mask_type}")
        if attention_bias is not None:
            raise ValueError("SdpaAttention does not support attention_bias")
        if packed_seq_params is not None:
            return self._packed(query, key, value, packed_seq_params)
        seq, batch, heads, head_dim = query.shape
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d] views
        context = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.softmax_scale, enable_gqa=heads != key.shape[2]
        )
        return context.permute(2, 0, 1, 3).reshape(seq, batch, heads * head_dim)

    def _packed(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                params: PackedSeqParams) -> torch.Tensor:
        """Packed documents (megatron's THD layout, [t, heads, d]; `cu_seqlens_q` their boundaries): causal
        attention within each document only, by a block-diagonal causal mask (transformer-engine runs
        the same `PackedSeqParams` with its own varlen kernels)."""
        if params.qkv_format != "thd":
            raise ValueError(f"SdpaAttention packs THD sequences only, got qkv_format {params.qkv_format!r}")
        bounds = params.cu_seqlens_q_padded if params.cu_seqlens_q_padded is not None else params.cu_seqlens_q
        tokens, heads, head_dim = query.shape
        document = torch.repeat_interleave(torch.arange(len(bounds) - 1, device=query.device),
                                           bounds.diff().to(query.device))  # fmt: skip
        assert document.numel() == tokens, f"cu_seqlens cover {document.numel()} of {tokens} tokens"
        allowed = (document[:, None] == document[None, :]).tril()
        q, k, v = (t.permute(1, 0, 2)[None] for t in (query, key, value))  # [1, heads, t, d]
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, scale=self.softmax_scale, enable_gqa=heads != key.shape[1]
        )
        return context[0].permute(1, 0, 2).reshape(tokens, heads * head_dim)
