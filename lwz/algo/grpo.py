"""The GRPO policy loss: token-level clipped ratio, optional KL to a reference, loss aggregation.

Per response token t of sequence b with advantage A_b and ratio rho = exp(logp - logp_old):
  l_bt = max(-A_b rho, -A_b clip(rho, 1 - clip_low, 1 + clip_high)) + kl_coef KL_bt
  KL (k1) = logp - logp_ref;  KL (k3) = exp(logp_ref - logp) - (logp_ref - logp) - 1
With a rollout correction (`lwz.algo.rollout_correction`: tis, icepop, seq_tis, seq_mask_tis) the
policy-gradient term of each token is weighted by w_bt, a function of exp(logp_old - logp_engine) (no
gradient), which corrects for the engine sampling from a slightly different distribution than the actor's.
Aggregation: token_mean = sum_bt l_bt / N_tokens;  seq_mean = sum_b (sum_t l_bt / T_b) / N_seqs.
`normalizer` replaces N_tokens / N_seqs by the count over the whole (data-parallel) mini-batch, so
micro-batch losses add up to the mini-batch's mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lwz.algo.rollout_correction import Correction, correction_weights


@dataclass(frozen=True)
class LossSettings:
    """The recipe's algo section, as the loss needs it."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    loss_agg: str = "token_mean"
    rollout_correction: str = "none"
    tis_cap: float = 2.0
    stale_tokens: str = "mask"
    clip_ratio_c: float = 3.0
    correction_low: float = 0.5
    correction_high: float = 5.0

    @property
    def correction(self) -> Correction:
        """The rollout correction and its bounds."""
        return Correction(self.rollout_correction, self.tis_cap, self.correction_low, self.correction_high)

    # Stale tokens (sampled under older weights: a partial rollout's carried ones, one_step_off's batch) are
    # decided here only: "mask" leaves them out of the loss and its mean, "importance" weighs them against
    # the engine's logprobs, "recompute" trains them like fresh ones (their old logprobs the actor's own).
    @property
    def marks_stale(self) -> bool:
        """Whether the loss tells stale tokens from fresh ones."""
        return self.stale_tokens != "recompute"

    def loss_tokens(self, response_tokens: int, stale: int) -> int:
        """A response's tokens in the loss's mean."""
        return response_tokens - (stale if self.stale_tokens == "mask" else 0)

    def in_loss(self, mask: torch.Tensor, fresh_mask: torch.Tensor) -> torch.Tensor:
        """The tokens the loss (and the entropy metric) average over, given the fresh ones among `mask`."""
        return fresh_mask if self.stale_tokens == "mask" else mask


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate from sampled tokens."""
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.exp(log_ratio) - log_ratio - 1
    raise ValueError(f"unknown KL estimator {estimator!r}")


def rollout_mismatch(old_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """How far the actor's distribution is from the engine's on the sampled tokens: mean |logp_old -
    logp_engine| and the k3 estimate of KL(engine || actor), exp(d) - d - 1 with d = logp_old - logp_engine."""
    d = old_logprobs - engine_logprobs
    return {"rollout_logprob_diff": _masked_mean(d.abs(), mask), "rollout_kl": _masked_mean(torch.expm1(d) - d, mask)}


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, settings: LossSettings, ref_logprobs: torch.Tensor | None = None,
                normalizer: float | None = None, engine_logprobs: torch.Tensor | None = None,
                fresh: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a batch of [B, T] token logprobs and [B] advantages, and detached metrics.

    `engine_logprobs` (the rollout engine's logprobs of the sampled tokens) are needed by a rollout
    correction; when given, the mismatch metrics are reported too (over fresh tokens).
    `fresh` marks tokens sampled under the current weights (1) against older ones (0, a partial
    rollout's carried tokens): `stale_tokens="mask"` leaves the old ones out of the loss, "importance"
    takes their engine logprobs (the policy that sampled them) as the old logprobs of the clipped ratio.
    """
    mask = mask.to(logprobs.dtype)
    fresh_mask = mask if fresh is None else mask * fresh.to(mask.dtype)
    if fresh is not None and settings.stale_tokens == "mask":
        mask = settings.in_loss(mask, fresh_mask)
    elif fresh is not None:
        assert settings.stale_tokens == "importance", f"unknown stale_tokens {settings.stale_tokens!r}"
        assert engine_logprobs is not None, "importance-weighted stale tokens need the engine's logprobs"
        old_logprobs = torch.where(fresh.bool(), old_logprobs, engine_logprobs.to(old_logprobs.dtype))
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)
    clipped_ratio = torch.clamp(ratio, 1 - settings.clip_low, 1 + settings.clip_high)
    per_token = torch.maximum(-adv * ratio, -adv * clipped_ratio)
    if settings.clip_ratio_c > 0:  # dual clip: a negative advantage's loss is bounded by -A c
        per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * settings.clip_ratio_c), per_token)
    metrics: dict[str, torch.Tensor] = {}
    if engine_logprobs is not None:
        metrics.update(rollout_mismatch(old_logprobs.detach(), engine_logprobs, fresh_mask))
    if settings.rollout_correction != "none":
        assert engine_logprobs is not None, f"rollout_correction={settings.rollout_correction!r} needs the engine's logprobs"
        weight, correction_metrics = correction_weights(old_logprobs, engine_logprobs, mask, settings.correction)
        per_token = per_token * weight
        metrics.update(correction_metrics)
    if settings.kl_coef > 0:
        assert ref_logprobs is not None, "kl_coef > 0 needs reference logprobs"
        kl = kl_penalty(logprobs, ref_logprobs, settings.kl_estimator)
        per_token = per_token + settings.kl_coef * kl
        metrics["kl"] = _masked_mean(kl, mask).detach()
    loss = aggregate(per_token, mask, settings.loss_agg, normalizer)
    with torch.no_grad():
        clipped = (-adv * clipped_ratio > -adv * ratio).to(mask.dtype)
        metrics.update(clip_fraction=_masked_mean(clipped, mask),
                       clip_low_fraction=_masked_mean(clipped * (ratio < 1 - settings.clip_low), mask),
                       clip_high_fraction=_masked_mean(clipped * (ratio > 1 + settings.clip_high), mask),
                       ratio_mean=_masked_mean(ratio, mask),
                       approx_kl_old=_masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask))
    return loss, metrics


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, normalizer: float | None = None
              ) -> torch.Tensor:
    """Reduce [B, T] per-token losses to a scalar (token_mean or seq_mean)."""
    if mode == "token_mean":
        total = (per_token * mask).sum()
        return total / (normalizer if normalizer is not None else mask.sum().clamp(min=1))
    if mode == "seq_mean":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / (normalizer if normalizer is not None else per_seq.numel())
    raise ValueError(f"unknown loss aggregation {mode!r}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)
