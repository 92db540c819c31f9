"""`SdpaAttention` against megatron's `DotProductAttention`, in a fresh process (the CPU shims patch
torch globally and megatron's attention needs model-parallel state).

Usage: python tests/dist/sdpa_attention_check.py  (exits 0 and prints "ok" when every check holds)

Head layouts per TP rank: Qwen2.5-0.5B at TP=1 (14 heads, 2 KV heads) and at TP=2 (7, 1), a
Llama-like 4:1 grouping (8, 2) and plain multi-head attention (4, 4).
"""

from __future__ import annotations

import os
import socket

import torch

LAYOUTS = [(14, 2, 64), (7, 1, 64), (8, 2, 32), (4, 4, 16)]  # heads, kv heads, head_dim
SEQ, BATCH = 37, 3


def causal_mask(seq: int) -> torch.Tensor:
    """Megatron's boolean mask [1, 1, s, s]: True where a query must not attend."""
    return torch.ones(seq, seq, dtype=torch.bool).triu(1)[None, None]


def attention_pair(heads: int, kv_heads: int, head_dim: int):
    """Megatron's DotProductAttention and SdpaAttention built from one TP=1 config."""
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from lwz.actor.sdpa_attention import SdpaAttention

    config = TransformerConfig(
        num_layers=1, hidden_size=heads * head_dim, num_attention_heads=heads,
        num_query_groups=kv_heads, kv_channels=head_dim, attention_dropout=0.0,
        attention_softmax_in_fp32=True, masked_softmax_fusion=False, use_cpu_initialization=True,
    )  # fmt: skip
    args = {"config": config, "layer_number": 1, "attn_mask_type": AttnMaskType.causal,
            "attention_type": "self", "softmax_scale": None, "pg_collection": None}  # fmt: skip
    return DotProductAttention(**args), SdpaAttention(**args)


def check_layout(heads: int, kv_heads: int, head_dim: int) -> None:
    """Outputs and q/k/v gradients agree within 1e-5 in fp32."""
    reference, sdpa = attention_pair(heads, kv_heads, head_dim)
    g = torch.Generator().manual_seed(heads * 100 + kv_heads)
    shapes = [(SEQ, BATCH, heads, head_dim)] + [(SEQ, BATCH, kv_heads, head_dim)] * 2
    inputs = [torch.randn(*shape, generator=g) for shape in shapes]
    upstream = torch.randn(SEQ, BATCH, heads * head_dim, generator=g)
    results = []
    for module, mask in ((reference, causal_mask(SEQ)), (sdpa, None)):
        q, k, v = (t.clone().requires_grad_() for t in inputs)
        out = module(q, k, v, mask)
        (out * upstream).sum().backward()
        results.append([out, q.grad, k.grad, v.grad])
    assert results[1][0].shape == (SEQ, BATCH, heads * head_dim)
    for name, want, got in zip(("output", "dq", "dk", "dv"), *results):
        err = (want - got).abs().max().item()
        assert err < 1e-5, f"{heads}/{kv_heads} heads, d={head_dim}: {name} differs by {err:.2e}"


def check_refusals() -> None:
    """Settings SdpaAttention does not implement fail loudly instead of being ignored."""
    from megatron.core.transformer.enums import AttnMaskType

    from lwz.actor.sdpa_attention import SdpaAttention

    _, sdpa = attention_pair(4, 2, 16)
    q, kv = torch.randn(5, 1, 4, 16), torch.randn(5, 1, 2, 16)
    refused = []
    for build in (
        lambda: sdpa(q, kv, kv, causal_mask(5)),
        lambda: SdpaAttention(sdpa.config, 1, AttnMaskType.causal, "self", attention_dropout=0.1),
        lambda: SdpaAttention(sdpa.config, 1, AttnMaskType.padding, "self"),
    ):
        try:
            build()
        except ValueError:
            refused.append(True)
    assert len(refused) == 3, "an unsupported setting was accepted"


def main() -> None:
    from lwz.runtime import init_distributed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    init_distributed(1, 1, seed=0, device="cpu")
    for layout in LAYOUTS:
        check_layout(*layout)
    check_refusals()
    print("ok")


if __name__ == "__main__":
    main()
