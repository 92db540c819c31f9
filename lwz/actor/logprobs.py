"""Per-token logprobs and entropy from vocab-parallel logits, without gathering the vocabulary.

Each tensor-parallel rank holds logits for a contiguous slice of the (padded) vocabulary. The
log-normaliser is built from a max and a sum of exponentials all-reduced over the TP group;
the label's logit comes from the rank that owns it. Rows past the real vocabulary (TP padding)
are excluded. Results are fp32.
"""

from __future__ import annotations

import torch

__all__ = ["vocab_parallel_logprobs", "vocab_parallel_entropy"]


def _vocab_range(local_size: int) -> tuple[int, int]:
    from megatron.core import parallel_state

    start = parallel_state.get_tensor_model_parallel_rank() * local_size
    return start, start + local_size


def _masked_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """fp32 logits with TP-padding rows (global index >= vocab_size) set to -inf."""
    logits = logits.float()
    start, end = _vocab_range(logits.shape[-1])
    if end <= vocab_size:
        return logits
    padding = torch.arange(start, end, device=logits.device) >= vocab_size
    return logits.masked_fill(padding, float("-inf"))


def _log_normalizer(logits: torch.Tensor) -> torch.Tensor:
    """log sum_v exp(logits_v) over the whole vocabulary; differentiable (all-reduce with identity backward)."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import reduce_from_tensor_model_parallel_region

    with torch.no_grad():
        shift = logits.max(dim=-1).values
        if parallel_state.get_tensor_model_parallel_world_size() > 1:
            torch.distributed.all_reduce(
                shift, op=torch.distributed.ReduceOp.MAX, group=parallel_state.get_tensor_model_parallel_group()
            )
    sum_exp = torch.exp(logits - shift.unsqueeze(-1)).sum(dim=-1)
    return shift + torch.log(reduce_from_tensor_model_parallel_region(sum_exp))


def vocab_parallel_logprobs(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """log p(label) per position: `logits` [..., V_local] (this rank's vocab slice), `labels` [...].

    Differentiable with respect to `logits`; every TP rank returns the same fp32 values.
    """
    from megatron.core.tensor_parallel import reduce_from_tensor_model_parallel_region

    logits = _masked_logits(logits, vocab_size)
    start, end = _vocab_range(logits.shape[-1])
    owned = (labels >= start) & (labels < end)
    local_index = (labels - start).clamp(0, logits.shape[-1] - 1)
    picked = logits.gather(-1, local_index.unsqueeze(-1)).squeeze(-1)
    picked = torch.where(owned, picked, torch.zeros_like(picked))
    return reduce_from_tensor_model_parallel_region(picked) - _log_normalizer(logits)


def vocab_parallel_entropy(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Entropy of softmax(logits) per position (a metric: no gradient), fp32, same on every TP rank."""
    from megatron.core.tensor_parallel import reduce_from_tensor_model_parallel_region

    with torch.no_grad():
        logits = _masked_logits(logits, vocab_size)
        log_z = _log_normalizer(logits)
        probs = torch.exp(logits - log_z.unsqueeze(-1))
        expected_logit = torch.where(probs > 0, probs * logits, torch.zeros_like(probs)).sum(dim=-1)
        return log_z - reduce_from_tensor_model_parallel_region(expected_logit)
