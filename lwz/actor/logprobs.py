"""Per-token logprobs and entropy from vocab-parallel logits, without gathering the vocabulary.

Each tensor-parallel rank holds logits for a contiguous slice of the (padded) vocabulary. The
log-normaliser is built from a max and a sum of exponentials all-reduced over the TP group;
the label's logit comes from the rank that owns it. Rows past the real vocabulary (TP padding)
are excluded. Results are fp32. With a sampling `temperature` T the distribution is
softmax(logits / T), the one the rollout engine sampled from (its processed logprobs).

`projected_logprobs_and_entropy` starts one step earlier, from the hidden states and the output
layer's weight: it projects `chunk` positions at a time in the forward pass and again in the
backward pass, so the [positions x vocabulary] logits never exist whole (memory stays that of one
chunk; the price is the projection's forward computed twice). Its buffers are reused across the
calls of a pass over a batch, so the micro-batches allocate no fresh pages for them.
"""

from __future__ import annotations

import torch

__all__ = ["logprobs_and_entropy", "projected_logprobs_and_entropy", "release_projection_buffers",
           "vocab_parallel_logprobs", "vocab_parallel_entropy"]


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


def _label_index(labels: torch.Tensor, local_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether this rank's vocab slice holds each label, and the label's index in it (clamped)."""
    start, end = _vocab_range(local_size)
    return (labels >= start) & (labels < end), (labels - start).clamp(0, local_size - 1)


def _softmax_stats(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, temperature: float):
    """(log p(label), entropy, log Z, softmax) of masked fp32 `logits` [..., V_local], over the TP group."""
    logits = _masked_logits(logits, vocab_size, temperature)
    end = _vocab_range(logits.shape[-1])[1]
    shift = _tp_all_reduce(logits.max(dim=-1).values, torch.distributed.ReduceOp.MAX)
    softmax = (logits - shift.unsqueeze(-1)).exp_()
    sum_exp = _tp_all_reduce(softmax.sum(dim=-1))
    owned, local_index = _label_index(labels, logits.shape[-1])
    picked = logits.gather(-1, local_index.unsqueeze(-1)).squeeze(-1)
    picked = _tp_all_reduce(torch.where(owned, picked, torch.zeros_like(picked)))
    log_z = shift + torch.log(sum_exp)
    softmax.div_(sum_exp.unsqueeze(-1))
    finite = torch.where(torch.isinf(logits), torch.zeros_like(logits), logits) if end > vocab_size else logits
    expected_logit = _tp_all_reduce((softmax.unsqueeze(-2) @ finite.unsqueeze(-1)).reshape(labels.shape))
    return picked - log_z, log_z - expected_logit, log_z, softmax


def _logits_grad(softmax: torch.Tensor, labels: torch.Tensor, grad_logprobs: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """d log p(label) / d logits = (onehot - softmax) / T, times the incoming gradient, in `softmax`'s place."""
    owned, local_index = _label_index(labels, softmax.shape[-1])
    grad = softmax.mul_(-grad_logprobs.unsqueeze(-1))
    grad.scatter_add_(-1, local_index.unsqueeze(-1), (grad_logprobs * owned).unsqueeze(-1))
    return grad.div_(temperature) if temperature != 1.0 else grad


class _VocabParallelLogprobs(torch.autograd.Function):
    """log p(label) and the softmax's entropy in one pass; keeps one [..., V_local] tensor (the softmax)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, temperature: float):
        ctx.input_dtype, ctx.temperature = logits.dtype, temperature
        logprobs, entropy, _, softmax = _softmax_stats(logits, labels, vocab_size, temperature)
        ctx.save_for_backward(softmax, labels)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor):
        softmax, labels = ctx.saved_tensors
        return _logits_grad(softmax, labels, grad_logprobs, ctx.temperature).to(ctx.input_dtype), None, None, None


class _Workspace:
    """fp32 [rows, V_local] buffers by name, grown to the largest request and kept until `release`: every
    chunk of every micro-batch of a pass reuses them, so the allocator hands out no fresh pages (on a CPU a
    new large tensor is page faults, slower than the pass that fills it)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, rows: int, columns: int, device: torch.device) -> torch.Tensor:
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != columns or buffer.device != device:
            self.buffers.pop(name, None)  # free the old one first
            buffer = self.buffers[name] = torch.empty(rows, columns, dtype=torch.float32, device=device)
        return buffer[:rows]

    def release(self) -> None:
        self.buffers.clear()


_WORKSPACE = _Workspace()


def _project(hidden: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, vocab_size: int,
             temperature: float) -> torch.Tensor:
    """`out` := fp32 (hidden @ weight.T) / T, TP-padding columns (global index >= vocab_size) at -inf."""
    if hidden.dtype == torch.float32 and weight.dtype == torch.float32:
        torch.mm(hidden, weight.t(), out=out)
    else:
        out.copy_(hidden @ weight.t())
    if temperature != 1.0:
        out.div_(temperature)
    start, end = _vocab_range(out.shape[-1])
    if end > vocab_size:
        out[:, max(vocab_size - start, 0):] = float("-inf")
    return out


def _zero_padding(out: torch.Tensor, vocab_size: int) -> None:
    start, end = _vocab_range(out.shape[-1])
    if end > vocab_size:
        out[:, max(vocab_size - start, 0):] = 0.0


class _ProjectedLogprobs(torch.autograd.Function):
    """`_VocabParallelLogprobs` of `hidden @ weight.T`, `chunk` rows at a time in reused buffers. Only the
    inputs and each row's log-normaliser are kept; the backward recomputes a chunk's softmax from them (one
    projection and one exp, no reductions). On a CPU that is as fast as keeping the whole softmax: the
    chunks stay in cache, a kept softmax would not."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, vocab_size: int,
                temperature: float, chunk: int):
        n_rows, columns, device = len(labels), weight.shape[0], hidden.device
        ctx.temperature, ctx.chunk, ctx.vocab_size = temperature, chunk, vocab_size
        logprobs = torch.empty(labels.shape, dtype=torch.float32, device=device)
        entropy, log_z = torch.empty_like(logprobs), torch.empty_like(logprobs)
        scratch = _WORKSPACE.get("scratch", min(chunk, n_rows), columns, device)
        exp_scratch = _WORKSPACE.get("exp", min(chunk, n_rows), columns, device)
        for rows in _chunks(n_rows, chunk):
            n = rows.stop - rows.start
            shifted, exp = _project(hidden[rows], weight, scratch[:n], vocab_size, temperature), exp_scratch[:n]
            shift = _tp_all_reduce(shifted.amax(dim=-1), torch.distributed.ReduceOp.MAX)
            owned, local_index = _label_index(labels[rows], columns)
            shifted.sub_(shift.unsqueeze(-1))
            picked = _tp_all_reduce(torch.where(owned, shifted.gather(-1, local_index.unsqueeze(-1)).squeeze(-1), 0.0))
            torch.exp(shifted, out=exp)
            sum_exp = _tp_all_reduce(exp.sum(dim=-1))
            _zero_padding(shifted, vocab_size)  # there exp is 0, and 0 * -inf would be nan
            expected_shifted = _tp_all_reduce(shifted.mul_(exp).sum(dim=-1))
            log_sum = torch.log(sum_exp)
            log_z[rows] = shift + log_sum
            logprobs[rows] = picked - log_sum
            entropy[rows] = log_sum - expected_shifted / sum_exp
        ctx.save_for_backward(hidden, weight, labels, log_z)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor):
        hidden, weight, labels, log_z = ctx.saved_tensors
        n_rows, columns, device = len(labels), weight.shape[0], hidden.device
        grad_hidden = torch.empty_like(hidden)
        grad_weight_t = torch.zeros(weight.shape[::-1], dtype=torch.float32, device=device)  # [H, V_local]
        # d log p(label) / d logits = (onehot - softmax) / T, times the incoming gradient
        g = grad_logprobs / ctx.temperature
        scratch = _WORKSPACE.get("scratch", min(ctx.chunk, n_rows), columns, device)
        for rows in _chunks(n_rows, ctx.chunk):
            grad = _project(hidden[rows], weight, scratch[: rows.stop - rows.start], ctx.vocab_size, ctx.temperature)
            grad.sub_(log_z[rows].unsqueeze(-1)).exp_().mul_(-g[rows].unsqueeze(-1))
            owned, local_index = _label_index(labels[rows], columns)
            grad.scatter_add_(-1, local_index.unsqueeze(-1), (g[rows] * owned).unsqueeze(-1))
            if hidden.dtype == torch.float32 and weight.dtype == torch.float32:
                torch.mm(grad, weight, out=grad_hidden[rows])
                grad_weight_t.addmm_(hidden[rows].t(), grad)
            else:
                grad_hidden[rows] = grad.to(hidden.dtype) @ weight
                grad_weight_t.addmm_(hidden[rows].t().float(), grad)
        return grad_hidden, grad_weight_t.t().to(weight.dtype).contiguous(), None, None, None, None


def _chunks(n: int, chunk: int) -> list[slice]:
    return [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]


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


def release_projection_buffers() -> None:
    """Free the buffers `projected_logprobs_and_entropy` reuses (after a pass, before another phase)."""
    _WORKSPACE.release()


def projected_logprobs_and_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                   vocab_size: int, temperature: float = 1.0, chunk: int = 1024
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`logprobs_and_entropy` of the logits `hidden @ weight.T`, projected `chunk` positions at a time.

    `hidden` [N, H] is the output layer's input for N positions, the same on every TP rank (its
    gradient is this rank's part: reduce it over TP, as megatron's output layer does); `weight`
    [V_local, H] is this rank's vocab slice of the output layer; `labels` [N]. Memory: the inputs and
    two [chunk, V_local] fp32 buffers.
    """
    assert temperature > 0 and chunk > 0, f"temperature {temperature} and chunk {chunk} must be positive"
    logprobs, entropy = _ProjectedLogprobs.apply(hidden, weight, labels, vocab_size, float(temperature), int(chunk))
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
