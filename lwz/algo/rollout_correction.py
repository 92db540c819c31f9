"""Correcting the loss for the rollout engine sampling from another distribution than the actor's.

With r_t = p_actor(y_t) / p_engine(y_t) = exp(logp_old - logp_engine) of each sampled token (no gradient:
the weights scale the policy-gradient term of the token), `algo.rollout_correction` is one of:
- `tis`: w_t = min(r_t, cap) (truncated importance sampling, token level; verl's token TIS, NeMo-RL's and
  OpenRLHF's `tis` with an upper bound only);
- `icepop`: w_t = r_t where low <= r_t <= high, else 0 (IcePop; NeMo-RL's and OpenRLHF's `icepop`);
- `seq_tis`: every token of sequence b weighted by min(prod_t r_t, cap) (verl's sequence-level TIS);
- `seq_mask_tis`: a sequence whose geometric-mean ratio exp(mean_t log r_t) leaves [low, high] is masked out
  (weight 0), the kept sequences' tokens take the token TIS weight min(r_t, cap) (NeMo-RL's and OpenRLHF's
  `seq-mask-tis`, verl's geometric rejection sampling with token TIS).
A masked token stays in the loss's mean (its weight is 0), as the peers count it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CORRECTIONS = ("none", "tis", "icepop", "seq_tis", "seq_mask_tis")
CAPPED = ("tis", "seq_tis", "seq_mask_tis")   # the corrections bounded by `cap`
BANDED = ("icepop", "seq_mask_tis")           # the corrections masking outside [low, high]
# Metrics a correction reports, as token-weighted means over the micro-batches (the quantiles are each
# micro-batch's, averaged: exact for one micro-batch per step).
CORRECTION_METRICS = ("correction_weight_mean", "correction_masked_tokens", "correction_masked_seqs",
                      "correction_ratio_p05", "correction_ratio_p50", "correction_ratio_p95")


@dataclass(frozen=True)
class Correction:
    """Which correction and its bounds (the recipe's algo.rollout_correction, tis_cap, correction_low/high)."""

    kind: str = "none"
    cap: float = 2.0
    low: float = 0.5
    high: float = 5.0

    def __post_init__(self) -> None:
        assert self.kind in CORRECTIONS, f"unknown rollout correction {self.kind!r}"
        assert 0 < self.low <= 1 <= self.high and self.cap >= 1, f"bad bounds {self}"

    def describe(self) -> str:
        """The kind with the bounds it uses, e.g. "seq_mask_tis (cap 2, band [0.5, 5])"."""
        parts = ([f"cap {self.cap:g}"] if self.kind in CAPPED else []) + \
            ([f"band [{self.low:g}, {self.high:g}]"] if self.kind in BANDED else [])
        return f"{self.kind} ({', '.join(parts)})" if parts else self.kind


def correction_weights(old_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor,
                       correction: Correction) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """[B, T] weights of each token's policy-gradient term (1 for `none`) and the correction's metrics.

    `mask` marks the response tokens the weights are computed over (padding and prompt 0)."""
    import torch

    mask = mask.to(old_logprobs.dtype)
    log_ratio = (old_logprobs.detach() - engine_logprobs.to(old_logprobs.dtype)) * mask
    ratio = torch.exp(log_ratio)
    if correction.kind == "none":
        return torch.ones_like(ratio), {}
    if correction.kind == "tis":
        weight = ratio.clamp(max=correction.cap)
    elif correction.kind == "icepop":
        weight = torch.where((ratio >= correction.low) & (ratio <= correction.high), ratio, torch.zeros_like(ratio))
    elif correction.kind == "seq_tis":
        weight = torch.exp(log_ratio.sum(-1, keepdim=True)).clamp(max=correction.cap).expand_as(ratio)
    else:
        tokens = mask.sum(-1, keepdim=True).clamp(min=1)
        geometric = torch.exp(log_ratio.sum(-1, keepdim=True) / tokens)
        kept = (geometric >= correction.low) & (geometric <= correction.high)
        weight = torch.where(kept, ratio.clamp(max=correction.cap), torch.zeros_like(ratio))
    weight = weight * mask
    return weight, _metrics(weight, ratio, mask)


def _metrics(weight: torch.Tensor, ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    import torch

    n = mask.sum().clamp(min=1)
    rows = mask.sum(-1) > 0
    masked = (weight == 0) & (mask > 0)
    probabilities = torch.tensor([0.05, 0.5, 0.95], device=ratio.device)   # on the GPU with the ratios
    quantiles = torch.quantile(ratio[mask > 0].float(), probabilities) if bool(rows.any()) \
        else torch.ones(3, device=ratio.device)
    return {
        "correction_weight_mean": (weight * mask).sum() / n,
        "correction_masked_tokens": masked.to(mask.dtype).sum() / n,
        "correction_masked_seqs": (masked.sum(-1) == mask.sum(-1))[rows].to(mask.dtype).mean() if bool(rows.any())
        else torch.zeros((), device=mask.device),
        **{f"correction_ratio_{name}": q.to(mask.dtype) for name, q in zip(("p05", "p50", "p95"), quantiles)},
    }
