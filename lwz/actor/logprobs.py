"""Per-token logprobs and entropy from vocab-parallel logits, without gathering the vocabulary.

Each tensor-parallel rank holds logits for a contiguous slice of the (padded) vocabulary. The
log-normaliser is built from a max and a sum of exponentials all-reduced over the TP group;
the label's logit comes from the rank that owns it. Rows past the real vocabulary (TP padding)
are excluded. Results are fp32. With a sampling `temperature` T the distribution is
softmax(logits / T), the one the rollout engine sampled from (its processed logprobs).
"""

from __future__ import annotations

import torch

__all__ = ["logprobs_and_entropy", "vocab_parallel_logprobs", "vocab_parallel_entropy"]


def _vocab_range(local_size: int) -> tuple[int, int]:
    from megatron.core import parallel_state

    start = parallel_state.get_tensor_model_parallel_rank() * local_size
    return start, start + local_size


def _masked_logits(logits: torch.Tensor, vocab_size: int, temperature: float) -> torch.Tensor:
    """fp32 logits / temperature with TP-padding rows (global index >= vocab_size) set to -inf."""
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    start, end = _vocab_range(logits.shape[-1])
    if end <= vocab_size:
        return logits
    padding = torch.arange(start, end, device=logits.device) >= vocab_size
    return logits.masked_fill(padding, float("-inf"))


def _tp_all_reduce(tensor: torch.Tensor, op=torch.distributed.ReduceOp.SUM) -> torch.Tensor:
    from megatron.core import parallel_state

    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        torch.distributed.all_reduce(tensor, op=op, group=parallel_state.get_tensor_model_parallel_group())
    return tensor


class _VocabParallelLogprobs(torch.autograd.Function):
    """log p(label) and the softmax's entropy in one pass; keeps one [..., V_local] tensor (the softmax)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, temperature: float):
        ctx.input_dtype, ctx.temperature = logits.dtype, temperature
        logits = _masked_logits(logits, vocab_size, temperature)
        start, end = _vocab_range(logits.shape[-1])
        shift = _tp_all_reduce(logits.max(dim=-1).values, torch.distributed.ReduceOp.MAX)
        softmax = (logits - shift.unsqueeze(-1)).exp_()
        sum_exp = _tp_all_reduce(softmax.sum(dim=-1))
        owned = (labels >= start) & (labels < end)
        local_index = (labels - start).clamp(0, logits.shape[-1] - 1)
        picked = logits.gather(-1, local_index.unsqueeze(-1)).squeeze(-1)
        picked = _tp_all_reduce(torch.where(owned, picked, torch.zeros_like(picked)))
        log_z = shift + torch.log(sum_exp)
        softmax.div_(sum_exp.unsqueeze(-1))
        finite = torch.where(torch.isinf(logits), torch.zeros_like(logits), logits) if end > vocab_size else logits
        expected_logit = _tp_all_reduce((softmax.unsqueeze(-2) @ finite.unsqueeze(-1)).reshape(labels.shape))
        ctx.save_for_backward(softmax, owned, local_index)
        return picked - log_z, log_z - expected_logit

    @staticmethod
    def backward(ctx, grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor):
        softmax, owned, local_index = ctx.saved_tensors
        grad = softmax.mul_(-grad_logprobs.unsqueeze(-1))  # d log p(label) / d logits = onehot - softmax
        grad.scatter_add_(-1, local_index.unsqueeze(-1), (grad_logprobs * owned).unsqueeze(-1))
        if ctx.temperature != 1.0:
            grad.div_(ctx.temperature)
        return grad.to(ctx.input_dtype), None, None, None


def logprobs_and_entropy(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, temperature: float = 1.0
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) (differentiable) and the entropy (a metric, no gradient) per position, of
    softmax(logits / temperature).

    `logits` [..., V_local] is this rank's vocab slice, `labels` [...]; fp32 results, identical
    on every TP rank. Memory: one fp32 tensor of the logits' shape is kept for the backward.
    """
    assert temperature > 0, f"temperature {temperature} must be positive"
    logprobs, entropy = _VocabParallelLogprobs.apply(logits, labels, vocab_size, float(temperature))
    return logprobs, entropy.detach()


def vocab_parallel_logprobs(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int,
                            temperature: float = 1.0) -> torch.Tensor:
    """log p(label) per position (see `logprobs_and_entropy`)."""
    return logprobs_and_entropy(logits, labels, vocab_size, temperature)[0]


def vocab_parallel_entropy(logits: torch.Tensor, vocab_size: int, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per position (see `logprobs_and_entropy`)."""
    with torch.no_grad():
        labels = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
        return logprobs_and_entropy(logits, labels, vocab_size, temperature)[1]
