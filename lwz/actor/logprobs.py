"""Per-token logprobs and entropy from vocab-parallel logits, without gathering the vocabulary.

Each tensor-parallel rank holds logits for a contiguous slice of the (padded) vocabulary. The
log-normaliser is built from a max and a sum of exponentials all-reduced over the TP group;
the label's logit comes from the rank that owns it. Rows past the real vocabulary (TP padding)
are excluded. Results are fp32. With a sampling `temperature` T the distribution is
softmax(logits / T), the one the rollout engine sampled from (its processed logprobs).

`projected_logprobs_and_entropy` starts one step earlier, from the hidden states and the output
layer's weight: it projects `chunk` positions at a time in the forward pass and again in the
backward pass, so the [positions x vocabulary] logits never exist whole (memory stays that of one
chunk; the price is the projection's forward computed twice, unless the loss's gradient per
position can be had in the forward pass: `token_grad`). Its buffers are reused across the calls of
a pass over a batch, so the micro-batches allocate no fresh pages for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

__all__ = ["logprobs_and_entropy", "projected_logprobs_and_entropy", "release_projection_buffers",
           "vocab_parallel_logprobs"]

log = logging.getLogger(__name__)


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


def _logits_grad(exp: torch.Tensor, labels: torch.Tensor, grad_logprobs: torch.Tensor, temperature: float,
                 sum_exp: torch.Tensor | None = None) -> torch.Tensor:
    """d log p(label) / d logits = (onehot - softmax) / T, times the incoming gradient, in `exp`'s place;
    softmax = exp / sum_exp (`exp` is the softmax itself when `sum_exp` is None)."""
    g = grad_logprobs / temperature
    grad = exp.mul_((-g if sum_exp is None else -g / sum_exp).unsqueeze(-1))
    owned, local_index = _label_index(labels, exp.shape[-1])
    return grad.scatter_add_(-1, local_index.unsqueeze(-1), (g * owned).unsqueeze(-1))


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
    chunks stay in cache, a kept softmax would not.

    With `token_grad` (a loss that is a sum over positions, see `projected_logprobs_and_entropy`) the
    gradients are computed in the forward pass, from the chunk's softmax while it is at hand, and the
    backward only checks that the incoming gradient is the predicted one up to a scalar (the schedule's
    micro-batch and loss scaling) and scales them; if it is not, it recomputes as without."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, vocab_size: int,
                temperature: float, chunk: int, token_grad):
        n_rows, columns, device = len(labels), weight.shape[0], hidden.device
        ctx.temperature, ctx.chunk, ctx.vocab_size = temperature, chunk, vocab_size
        logprobs = torch.empty(labels.shape, dtype=torch.float32, device=device)
        entropy, log_z = torch.empty_like(logprobs), torch.empty_like(logprobs)
        scratch = _WORKSPACE.get("scratch", min(chunk, n_rows), columns, device)
        exp_scratch = _WORKSPACE.get("exp", min(chunk, n_rows), columns, device)
        predicted = _Gradients(hidden, weight) if token_grad is not None else None
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
            if predicted is not None:
                g = token_grad(rows, logprobs[rows]).to(torch.float32)
                predicted.g[rows] = g
                predicted.add(rows, _logits_grad(exp, labels[rows], g, temperature, sum_exp))
        ctx.predicted = predicted
        ctx.save_for_backward(hidden, weight, labels, log_z)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor):
        hidden, weight, labels, log_z = ctx.saved_tensors
        predicted, ctx.predicted = ctx.predicted, None
        scale = predicted.scale_to(grad_logprobs) if predicted is not None else None
        if scale is not None:
            return (*predicted.result(scale), None, None, None, None, None)
        if predicted is not None:
            _warn_mispredicted()
        gradients = _Gradients(hidden, weight)
        scratch = _WORKSPACE.get("scratch", min(ctx.chunk, len(labels)), weight.shape[0], hidden.device)
        for rows in _chunks(len(labels), ctx.chunk):
            softmax = _project(hidden[rows], weight, scratch[: rows.stop - rows.start], ctx.vocab_size,
                               ctx.temperature).sub_(log_z[rows].unsqueeze(-1)).exp_()
            gradients.add(rows, _logits_grad(softmax, labels[rows], grad_logprobs[rows], ctx.temperature))
        return (*gradients.result(1.0), None, None, None, None, None)


class _Gradients:
    """The gradients of `hidden` and `weight` accumulated one chunk of logit gradients at a time (the weight's
    transposed: 0.085 vs 0.18 s per 700 rows on a CPU), and the predicted incoming gradient `g`."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor):
        self.hidden, self.weight = hidden, weight
        self.grad_hidden = torch.empty_like(hidden)
        self.grad_weight_t = torch.zeros(weight.shape[::-1], dtype=torch.float32, device=hidden.device)
        self.g = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)

    def add(self, rows: slice, grad_logits: torch.Tensor) -> None:
        hidden, weight = self.hidden, self.weight
        if hidden.dtype == torch.float32 and weight.dtype == torch.float32:
            torch.mm(grad_logits, weight, out=self.grad_hidden[rows])
            self.grad_weight_t.addmm_(hidden[rows].t(), grad_logits)
        else:
            self.grad_hidden[rows] = grad_logits.to(hidden.dtype) @ weight
            self.grad_weight_t.addmm_(hidden[rows].t().float(), grad_logits)

    def scale_to(self, grad_logprobs: torch.Tensor) -> float | None:
        """The scalar c with grad_logprobs = c * g (1e-6 of its largest entry), or None if there is none."""
        grad = grad_logprobs.float()
        norm = torch.dot(self.g, self.g)
        c = (torch.dot(grad, self.g) / norm).item() if norm > 0 else 0.0
        tolerance = 1e-6 * grad.abs().max().item()
        return c if (grad - c * self.g).abs().max().item() <= tolerance else None

    def result(self, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        grad_hidden, grad_weight_t = self.grad_hidden, self.grad_weight_t
        if scale != 1.0:
            grad_hidden, grad_weight_t = grad_hidden.mul_(scale), grad_weight_t.mul_(scale)
        return grad_hidden, grad_weight_t.t().to(self.weight.dtype).contiguous()


_warned = False


def _warn_mispredicted() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("the loss's gradient was not the one predicted per position (is it a sum over tokens?): "
                    "the vocabulary projection is recomputed in the backward pass")


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
                                   vocab_size: int, temperature: float = 1.0, chunk: int = 1024,
                                   token_grad: Callable[[slice, torch.Tensor], torch.Tensor] | None = None
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`logprobs_and_entropy` of the logits `hidden @ weight.T`, projected `chunk` positions at a time.

    `hidden` [N, H] is the output layer's input for N positions, the same on every TP rank (its
    gradient is this rank's part: reduce it over TP, as megatron's output layer does); `weight`
    [V_local, H] is this rank's vocab slice of the output layer; `labels` [N]. Memory: the inputs and
    two [chunk, V_local] fp32 buffers.

    `token_grad(rows, logprobs[rows])`, for a loss that is a sum of per-position terms, gives
    d loss / d logprobs[rows]: then the gradients are made in the forward pass, which saves the
    backward's projection (a quarter of the matrix work); a loss whose gradient turns out otherwise
    (up to a scalar) is still exact, at the old cost.
    """
    assert temperature > 0 and chunk > 0, f"temperature {temperature} and chunk {chunk} must be positive"
    token_grad = token_grad if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad) else None
    logprobs, entropy = _ProjectedLogprobs.apply(hidden, weight, labels, vocab_size, float(temperature), int(chunk),
                                                 token_grad)  # fmt: skip
    return logprobs, entropy.detach()


def vocab_parallel_logprobs(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int,
                            temperature: float = 1.0) -> torch.Tensor:
    """log p(label) per position (see `logprobs_and_entropy`)."""
    return logprobs_and_entropy(logits, labels, vocab_size, temperature)[0]
