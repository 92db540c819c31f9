"""The rollout-correction family (lwz.algo.rollout_correction) against losses and gradients computed by hand.

One batch for every case: two sequences of three tokens, advantages A = (1, -1), the actor's logprobs at the
old ones (PPO ratio 1, inside the clip band: loss_bt = -A_b w_bt, gradient d loss / d logp_bt = -A_b w_bt / N
with token_mean over N = 5 tokens; the last token of sequence 2 is padding). The engine's probabilities make
r = p_actor / p_engine per token:
    sequence 1: r = 0.8, 4.0, 1.0      (prod 3.2, geometric mean 3.2^(1/3) = 1.474)
    sequence 2: r = 0.25, 0.5, (pad)   (prod 0.125, geometric mean 0.125^(1/2) = 0.354)
"""

import math

import pytest
import torch

from lwz.algo.grpo import LossSettings, policy_loss

ACTOR = [[0.4, 0.4, 0.3], [0.1, 0.2, 0.5]]
ENGINE = [[0.5, 0.1, 0.3], [0.4, 0.4, 0.5]]
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
ADV = [1.0, -1.0]


def run(kind: str, **bounds):
    old = torch.log(torch.tensor(ACTOR, dtype=torch.float64))
    logprobs = old.clone().requires_grad_(True)
    settings = LossSettings(rollout_correction=kind, clip_ratio_c=0.0, **bounds)
    loss, metrics = policy_loss(logprobs, old, torch.tensor(ADV, dtype=torch.float64),
                                torch.tensor(MASK, dtype=torch.float64), settings,
                                engine_logprobs=torch.log(torch.tensor(ENGINE, dtype=torch.float64)))
    loss.backward()
    return loss.item(), logprobs.grad, {k: v.item() for k, v in metrics.items()}


def expected(weights):
    """Loss and gradient for per-token weights (rows as in ACTOR; the padding's weight is ignored)."""
    loss = sum(-ADV[b] * weights[b][t] * MASK[b][t] for b in range(2) for t in range(3)) / 5
    grad = torch.tensor([[-ADV[b] * weights[b][t] * MASK[b][t] / 5 for t in range(3)] for b in range(2)],
                        dtype=torch.float64)
    return loss, grad


@pytest.mark.parametrize("kind, weights, masked_tokens, masked_seqs", [
    # tis: min(r, 2)
    ("tis", [[0.8, 2.0, 1.0], [0.25, 0.5, 0]], 0, 0),
    # icepop: r inside [0.5, 5], else 0 (0.25 is out)
    ("icepop", [[0.8, 4.0, 1.0], [0.0, 0.5, 0]], 1 / 5, 0),
    # seq_tis: min(prod r, 2) on every token: 2 for sequence 1, 0.125 for sequence 2
    ("seq_tis", [[2.0, 2.0, 2.0], [0.125, 0.125, 0]], 0, 0),
    # seq_mask_tis: geometric means 1.474 (kept: token weights min(r, 2)) and 0.354 (< 0.5: masked)
    ("seq_mask_tis", [[0.8, 2.0, 1.0], [0.0, 0.0, 0]], 2 / 5, 1 / 2),
])
def test_each_correction_weighs_the_loss_and_gradient_as_computed_by_hand(kind, weights, masked_tokens, masked_seqs):
    loss, grad, metrics = run(kind, tis_cap=2.0, correction_low=0.5, correction_high=5.0)
    want_loss, want_grad = expected(weights)
    assert loss == pytest.approx(want_loss)
    assert torch.allclose(grad, want_grad)
    kept = [weights[b][t] for b in range(2) for t in range(3) if MASK[b][t]]
    assert metrics["correction_weight_mean"] == pytest.approx(sum(kept) / 5)
    assert metrics["correction_masked_tokens"] == pytest.approx(masked_tokens)
    assert metrics["correction_masked_seqs"] == pytest.approx(masked_seqs)
    ratios = sorted([0.8, 4.0, 1.0, 0.25, 0.5])
    assert metrics["correction_ratio_p50"] == pytest.approx(ratios[2])
    assert metrics["correction_ratio_p05"] == pytest.approx(0.25 + 0.2 * (0.5 - 0.25))   # linear interpolation
    assert metrics["correction_ratio_p95"] == pytest.approx(1.0 + 0.8 * (4.0 - 1.0))


def test_the_band_and_cap_are_the_recipes():
    """A narrower band masks more: icepop with [0.9, 1.1] keeps only r = 1; seq_mask_tis with [0.3, 1.2]
    masks sequence 1 (1.474) and keeps sequence 2 (0.354), whose tokens take min(r, cap)."""
    loss, _, metrics = run("icepop", correction_low=0.9, correction_high=1.1)
    assert loss == pytest.approx(-1.0 / 5) and metrics["correction_masked_tokens"] == pytest.approx(4 / 5)
    loss, _, metrics = run("seq_mask_tis", tis_cap=2.0, correction_low=0.3, correction_high=1.2)
    assert loss == pytest.approx((0.25 + 0.5) / 5) and metrics["correction_masked_seqs"] == pytest.approx(1 / 2)
    loss, _, _ = run("seq_tis", tis_cap=3.0)
    assert loss == pytest.approx((-3.0 * 3 + 0.125 * 2) / 5)
    assert math.isclose(run("none")[0], (-3 + 2) / 5)
