"""A megatron-core GPTModel for an HF Qwen2/Qwen2.5 or Llama checkpoint, and a logits forward.

The architecture (RMSNorm, SwiGLU, GQA, RoPE base and Llama-3 scaling, qkv bias, tied or untied
embeddings) is read from the HF `config.json` dict. On a GPU with transformer-engine importable the
TE layer spec is used; otherwise (CPU, where the `lwz.runtime` CPU shims must be applied:
`init_distributed` does it, or a GPU without TE) megatron's local spec with PyTorch SDPA as core
attention. Both attend causally without an attention mask (batches are right-padded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lwz.actor.vocab import padded_vocab_size
from lwz.errors import LwzError
from lwz.rm.scalar_head import ScalarHead, has_scalar_head
from lwz.runtime.device import on_gpu

__all__ = [
    "Arch",
    "arch_from_hf_config",
    "build_gpt_model",
    "unwrap_model",
    "forward_logits",
    "padded_vocab_size",
    "uses_transformer_engine",
]

FAMILIES = ("qwen2", "llama")
_WHERE = "config.json"


@dataclass(frozen=True)
class Arch:
    """The architecture facts megatron and the converter need, read from an HF config."""

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling_factor: float | None  # Llama-3 RoPE scaling, None when absent
    qkv_bias: bool
    tie_word_embeddings: bool
    max_position_embeddings: int
    init_std: float
    scalar_head: bool = False  # a reward model: one score per position instead of the vocabulary

    @property
    def heads_per_group(self) -> int:
        """Query heads that share one KV head."""
        return self.num_heads // self.num_kv_heads


def arch_from_hf_config(config: dict[str, Any]) -> Arch:
    """Read and check an HF `config.json` dict of a Qwen2/Qwen2.5 or Llama model."""
    family = config.get("model_type")
    if family not in FAMILIES:
        raise LwzError(
            _WHERE, "model_type", f"'{family}' is not supported (allowed: {', '.join(FAMILIES)})"
        )
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise LwzError(_WHERE, "hidden_act", f"'{act}' is not supported (allowed: silu)")
    if config.get("use_sliding_window"):
        raise LwzError(_WHERE, "use_sliding_window", "sliding-window attention is not supported")
    if config.get("mlp_bias"):
        raise LwzError(_WHERE, "mlp_bias", "MLP biases are not supported")
    if family == "llama" and config.get("attention_bias"):
        raise LwzError(_WHERE, "attention_bias", "Llama attention biases are not supported")
    heads, kv_heads = (
        config["num_attention_heads"],
        config.get("num_key_value_heads") or config["num_attention_heads"],
    )
    if heads % kv_heads:
        raise LwzError(_WHERE, "num_key_value_heads", f"{kv_heads} does not divide {heads} heads")
    rope_theta, rope_factor = _rope(config)
    scalar_head = has_scalar_head(config)
    return Arch(
        family=family,
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        ffn_hidden_size=config["intermediate_size"],
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_theta=rope_theta,
        rope_scaling_factor=rope_factor,
        qkv_bias=family == "qwen2",
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)) and not scalar_head,
        max_position_embeddings=config.get("max_position_embeddings", 4096),
        init_std=config.get("initializer_range", 0.02),
        scalar_head=scalar_head,
    )


def _rope(config: dict[str, Any]) -> tuple[float, float | None]:
    """RoPE base and Llama-3 scaling factor from old (`rope_theta`, `rope_scaling`) or new
    (`rope_parameters`) HF config layouts."""
    params = dict(config.get("rope_scaling") or {})
    params.update(config.get("rope_parameters") or {})
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return float(theta), None
    megatron_llama3 = dict(
        low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
    )
    if kind == "llama3" and all(float(params.get(k, -1)) == v for k, v in megatron_llama3.items()):
        return float(theta), float(params["factor"])
    allowed = "none, llama3 with low_freq_factor 1, high_freq_factor 4, original max 8192"
    raise LwzError(_WHERE, "rope_parameters", f"{params} is not supported (allowed: {allowed})")


def uses_transformer_engine() -> bool:
    """Whether models are built with the transformer-engine layer spec (GPU with TE installed)."""
    return on_gpu() and _te_importable()


@functools.cache
def _te_importable() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def build_gpt_model(
    hf_config: dict[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    pre_process: bool | None = None,
    post_process: bool | None = None,
    config_overrides: dict[str, Any] | None = None,
):
    """A megatron-core GPTModel for this rank's TP shard and PP stage of the HF architecture.

    Needs megatron's model-parallel groups (`lwz.runtime.init_distributed`). `pre_process` /
    `post_process` default to whether this is the first / last pipeline stage. Extra
    TransformerConfig fields (e.g. recompute settings) go in `config_overrides`. A sequence classifier's
    config (`lwz.rm.scalar_head.reward_model_config`) gets a `ScalarHead` as its output layer. Weights are
    randomly initialised: load them with `lwz.actor.convert.load_hf_into_megatron`.
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer import TransformerConfig

    arch = arch_from_hf_config(hf_config)
    if dtype not in (torch.float32, torch.bfloat16):
        raise LwzError(None, "model.dtype", f"{dtype} is not supported (allowed: fp32, bf16)")
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    if arch.num_kv_heads % tp:
        raise LwzError(None, "actor.tp", f"{tp} does not divide the {arch.num_kv_heads} KV heads")
    if arch.num_layers % pp:
        raise LwzError(None, "actor.pp", f"{pp} does not divide the {arch.num_layers} layers")
    gpu = on_gpu()
    fields = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_heads,
        num_query_groups=arch.num_kv_heads,
        kv_channels=arch.head_dim,
        ffn_hidden_size=arch.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=arch.init_std,
        attention_softmax_in_fp32=True,
        apply_query_key_layer_scaling=False,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        use_cpu_initialization=not gpu,
    )
    fields.update(config_overrides or {})
    config = TransformerConfig(**fields)
    model = GPTModel(
        config=config,
        transformer_layer_spec=_layer_spec(config),
        vocab_size=padded_vocab_size(arch.vocab_size, tp),
        max_sequence_length=arch.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage()
        if pre_process is None
        else pre_process,
        post_process=parallel_state.is_pipeline_last_stage()
        if post_process is None
        else post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=arch.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=arch.rope_theta,
        rope_scaling=arch.rope_scaling_factor is not None,
        rope_scaling_factor=arch.rope_scaling_factor or 8.0,
    )
    model.hf_vocab_size = arch.vocab_size  # logits beyond it are TP padding
    if arch.scalar_head and model.post_process:  # a reward model: no vocabulary projection
        model.output_layer = ScalarHead(arch.hidden_size, arch.init_std, config.sequence_parallel, dtype)
    model.to(dtype)  # the local spec's torch norms are created in fp32 whatever params_dtype says
    return model.cuda() if gpu else model


def _layer_spec(config):
    """The TE layer spec (GPU with transformer-engine), else the local spec with PyTorch SDPA attention and
    `RMSNorm` (which supports sequence parallelism) for the layers' and the final norm."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    from lwz.actor.rms_norm import RMSNorm
    from lwz.actor.sdpa_attention import SdpaAttention

    if uses_transformer_engine():
        return get_gpt_layer_with_transformer_engine_spec()
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SdpaAttention
    spec.submodules.input_layernorm = RMSNorm
    spec.submodules.pre_mlp_layernorm = RMSNorm
    return TransformerBlockSubmodules(layer_specs=[spec] * get_num_layers_to_build(config), layer_norm=RMSNorm)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The GPTModel inside megatron's DDP / Float16Module wrappers."""
    from megatron.core.models.gpt import GPTModel

    while not isinstance(model, GPTModel):
        assert hasattr(model, "module"), f"{type(model).__name__} wraps no GPTModel"
        model = model.module
    return model


def forward_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
    """Full-vocabulary logits [batch, seq, vocab] of right-padded `input_ids` (same on all ranks).

    Runs megatron's forward-only pipeline schedule (one micro-batch) and gathers the TP vocab
    shards; returns the logits on the last pipeline stage and None on the others.
    """
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    inner = unwrap_model(model)
    vocab_size = inner.hf_vocab_size
    batch, seq_len = input_ids.shape
    device = next(inner.parameters()).device
    input_ids = input_ids.to(device)
    position_ids = torch.arange(seq_len, device=device).expand(batch, seq_len)

    def step(data_iterator, module):
        tokens = next(data_iterator)
        output = module(tokens, position_ids, None)  # causal attention needs no mask

        def collect(output_tensor, non_loss_data=True):
            logits = gather_from_tensor_model_parallel_region(output_tensor)
            return logits[..., :vocab_size].float()

        return output, collect

    with torch.no_grad():
        outputs = get_forward_backward_func()(
            forward_step_func=step,
            data_iterator=iter([input_ids]),
            model=[model],
            num_microbatches=1,
            seq_length=seq_len,
            micro_batch_size=batch,
            forward_only=True,
            collect_non_loss_data=True,
        )
    if not parallel_state.is_pipeline_last_stage():
        return None
    (logits,) = outputs
    return logits
