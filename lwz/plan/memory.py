"""Per-GPU memory estimates for the actor (Megatron-core) and the engines (vLLM).

All counts are bytes and follow documented formulas, so tests can check them by hand:

Parameters held by one actor rank of pipeline stage s (the vocabulary padded to a multiple of TP,
lwz.actor.vocab, and split over TP):
  per layer: sharded = h(q + 2kv) + q h + [q + 2kv if qkv_bias] + 3 h f   (split over TP),
             replicated = 2h (the two RMSNorms),   with q = heads x head_dim, kv = kv_heads x head_dim
  stage s:   L/PP x (sharded/TP + replicated) + [s = 0: V_pad h / TP]
             + [s = last: h (final norm) + (V_pad h / TP unless tied and PP = 1)]
Actor bytes per rank: weights = P x dtype bytes; fp32 main grads = 4 P; Adam = 12 P (fp32 master,
m, v; 8 P when the model is fp32), divided by DP with the distributed optimizer; a reference model
for KL adds P x dtype bytes.
Activations per micro-batch of T = micro_batch_tokens / CP tokens, per layer (b = dtype bytes):
  none: T b (4h / r + (2q + 2kv + 3f) / TP)   (norm inputs/outputs; qkv, attention output, gate,
        up, SwiGLU output), r = TP with sequence parallelism else 1;
  full recompute: T b h / r per layer (its input) plus one layer's "none" set while recomputing.
  with megatron's local spec (CPU, no transformer-engine), what autograd saves there, measured by
  bench/update_memory.py: T b (6h / r + (4q + kv + 5f) / TP + d) (the norms keep input and output,
  PyTorch SDPA keeps the key and value expanded to all heads, RoPE its rotated key, the unfused SwiGLU
  two more f); the backward's working set on top: LOCAL_BACKWARD_TRANSIENT of it, and an fp32 gradient
  of the vocabulary matrix on the first stage and on the last, 4 V_pad h / TP each (also measured).
Stage s holds PP - s micro-batches in flight (1F1B); the last stage adds the fp32 logits of one
projection chunk and their gradient, 2 x 4 min(T, C) V_pad / TP (C = actor.vocab_chunk_tokens).
Engines (vLLM): weights = ceil(P_hf / TP) x b; KV cache = sequences x tokens x 2 L ceil(kv_heads/TP)
head_dim b, for one group (group_size x (max_prompt_tokens + max_tokens)).
A reward model scored on the actor's grid (forward only, frozen): stage s holds its parameters as above
(a scalar head on the last stage) x b, moved onto the GPU for the reward phase only, and the activations
of one layer at a time: one layer's "none" set plus its input, T b h / r.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lwz.actor.vocab import padded_vocab_size
from lwz.recipe.schema import ArchCfg

GIB = 1 << 30
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# The local spec's update holds, at its peak, beyond its saved tensors: this share of them (activation
# gradients, the allocator's free pages) plus an fp32 gradient of each vocabulary matrix (the embedding's,
# the output projection's). Fitted on SmolLM2-135M at 1k-4.4k tokens: 0.34 and 0.23 GiB, the latter the two
# 49,152 x 576 gradients (bench/update_memory.py); with a margin.
LOCAL_BACKWARD_TRANSIENT = 0.4


def head_dim(arch: ArchCfg) -> int:
    """The head dimension (explicit, or hidden / heads)."""
    return arch.head_dim or arch.hidden_size // arch.num_attention_heads


def layer_params(arch: ArchCfg) -> tuple[int, int]:
    """(TP-sharded, replicated) parameter counts of one transformer layer."""
    h, f = arch.hidden_size, arch.intermediate_size
    q, kv = arch.num_attention_heads * head_dim(arch), arch.num_key_value_heads * head_dim(arch)
    attention = h * (q + 2 * kv) + q * h + ((q + 2 * kv) if arch.qkv_bias else 0)
    return attention + 3 * h * f, 2 * h


def hf_param_count(arch: ArchCfg) -> int:
    """Parameters of the HF model (no padding)."""
    sharded, replicated = layer_params(arch)
    embeddings = arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    return arch.num_layers * (sharded + replicated) + embeddings + arch.hidden_size


def stage_param_count(arch: ArchCfg, tp: int, pp: int, stage: int, scalar_head: bool = False) -> int:
    """Parameters held by one actor rank of pipeline stage `stage` (`scalar_head`: a reward model's, whose
    last stage holds a [1, hidden] head instead of the vocabulary projection)."""
    sharded, replicated = layer_params(arch)
    h, vocab = arch.hidden_size, padded_vocab_size(arch.vocab_size, tp)
    count = arch.num_layers // pp * (sharded // tp + replicated)
    if stage == 0:
        count += vocab * h // tp
    if stage == pp - 1:
        count += h
        if scalar_head:
            count += h
        elif not arch.tie_word_embeddings or pp > 1:
            count += vocab * h // tp
    return count


@dataclass(frozen=True)
class ActorMemory:
    """Bytes on one actor rank of one pipeline stage."""

    stage: int
    params: int
    weights: int
    grads: int
    optimizer: int
    reference: int
    activations: int

    @property
    def static(self) -> int:
        """What stays on the GPU between updates."""
        return self.weights + self.grads + self.optimizer + self.reference

    @property
    def total(self) -> int:
        return self.static + self.activations


def _layer_activations(arch: ArchCfg, b: int, tokens: int, tp: int, replicated_div: int,
                       local_spec: bool = False) -> int:
    """Bytes one layer keeps for its backward ("none" recompute) for a micro-batch of `tokens`
    (`local_spec`: megatron's local layer spec, lwz's SDPA attention and RMSNorm, as on CPU)."""
    h, f, d = arch.hidden_size, arch.intermediate_size, head_dim(arch)
    q, kv = arch.num_attention_heads * d, arch.num_key_value_heads * d
    if local_spec:
        return tokens * b * (6 * h // replicated_div + (4 * q + kv + 5 * f) // tp + d)
    return tokens * b * (4 * h // replicated_div + (2 * q + 2 * kv + 3 * f) // tp)


def actor_memory(arch: ArchCfg, *, dtype: str, tp: int, pp: int, dp: int, cp: int = 1,
                 distributed_optimizer: bool = True, recompute: str = "none",
                 sequence_parallel: bool = False, micro_batch_tokens: int, vocab_chunk_tokens: int = 2048,
                 reference: bool = False, scalar_head: bool = False, local_spec: bool = False) -> list[ActorMemory]:
    """Memory of one actor rank for each pipeline stage (`scalar_head`: of a reward model; `local_spec`:
    megatron's local layer spec, as on CPU, with its backward's working set)."""
    b = DTYPE_BYTES[dtype]
    h = arch.hidden_size
    tokens = math.ceil(micro_batch_tokens / cp)
    replicated_div = tp if sequence_parallel else 1
    full_layer = _layer_activations(arch, b, tokens, tp, replicated_div, local_spec)
    layers = arch.num_layers // pp
    optimizer_bytes = 8 if dtype == "fp32" else 12
    stages = []
    for stage in range(pp):
        params = stage_param_count(arch, tp, pp, stage, scalar_head)
        in_flight = pp - stage
        if recompute == "none":
            activations = in_flight * layers * full_layer
        else:
            activations = in_flight * layers * tokens * b * h // replicated_div + full_layer
        if local_spec:
            vocab_matrices = (stage == 0) + (stage == pp - 1 and not scalar_head)
            activations = math.ceil(activations * (1 + LOCAL_BACKWARD_TRANSIENT)) \
                + vocab_matrices * 4 * padded_vocab_size(arch.vocab_size, tp) * h // tp
        if stage == pp - 1 and not scalar_head:
            activations += 2 * 4 * min(tokens, vocab_chunk_tokens) * padded_vocab_size(arch.vocab_size, tp) // tp
        stages.append(ActorMemory(
            stage=stage, params=params, weights=params * b, grads=params * 4,
            optimizer=math.ceil(params * optimizer_bytes / (dp if distributed_optimizer else 1)),
            reference=params * b if reference else 0, activations=activations))
    return stages


@dataclass(frozen=True)
class EngineMemory:
    """Bytes on one GPU of an inference engine, and what vLLM is allowed to take."""

    weights: int
    kv_cache: int
    budget_bytes: int | None = None

    @property
    def budget(self) -> int:
        """vLLM's share of the GPU; on CPU (no fraction) exactly what the engine needs."""
        return self.total if self.budget_bytes is None else self.budget_bytes

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache


def engine_memory(arch: ArchCfg, *, dtype: str, tp: int, sequences: int, tokens_per_sequence: int,
                  budget: int | None = None) -> EngineMemory:
    """Weights plus the KV cache of `sequences` x `tokens_per_sequence` on one engine GPU."""
    b = DTYPE_BYTES[dtype]
    kv_heads = math.ceil(arch.num_key_value_heads / tp)
    per_token = 2 * arch.num_layers * kv_heads * head_dim(arch) * b
    return EngineMemory(weights=math.ceil(hf_param_count(arch) / tp) * b,
                        kv_cache=sequences * tokens_per_sequence * per_token, budget_bytes=budget)


@dataclass(frozen=True)
class ScorerMemory:
    """Bytes of a reward model on one actor rank of pipeline stage `stage`, during the reward phase."""

    stage: int
    params: int
    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations


def scorer_memory(arch: ArchCfg, *, dtype: str, tp: int, pp: int, sequence_parallel: bool,
                  micro_batch_tokens: int) -> list[ScorerMemory]:
    """A reward model scored on the actor's grid, per pipeline stage (forward only, one layer at a time)."""
    b = DTYPE_BYTES[dtype]
    replicated_div = tp if sequence_parallel else 1
    activations = _layer_activations(arch, b, micro_batch_tokens, tp, replicated_div) \
        + micro_batch_tokens * b * arch.hidden_size // replicated_div
    out = []
    for stage in range(pp):
        params = stage_param_count(arch, tp, pp, stage, scalar_head=True)
        out.append(ScorerMemory(stage, params, params * b, activations))
    return out
