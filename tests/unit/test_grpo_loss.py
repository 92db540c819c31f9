"""GRPO loss against numbers computed by hand."""

import math

import pytest
import torch

from lwz.algo.grpo import LossSettings, aggregate, kl_penalty, policy_loss

S = LossSettings(clip_low=0.2, clip_high=0.3)


def loss_of(ratio, adv, mask=None, settings=S, **kw):
    ratio = torch.tensor([ratio], dtype=torch.float64)
    lp = torch.log(ratio)
    mask = torch.ones_like(ratio) if mask is None else torch.tensor([mask], dtype=torch.float64)
    return policy_loss(lp, torch.zeros_like(lp), torch.tensor([adv], dtype=torch.float64), mask, settings, **kw)


@pytest.mark.parametrize("ratio, adv, expected, clipped", [
    ([1.1], 2.0, -2.2, 0.0),            # inside the band: -A rho
    ([1.5], 2.0, -2 * 1.3, 1.0),        # A > 0, above 1 + clip_high: clipped at 1.3
    ([0.5], 2.0, -1.0, 0.0),            # A > 0, below 1 - clip_low: unclipped (max picks -A rho)
    ([0.5], -2.0, 2 * 0.8, 1.0),        # A < 0, below 1 - clip_low: clipped at 0.8
    ([1.5], -2.0, 3.0, 0.0),            # A < 0, above the band: unclipped
])
def test_clip_active_and_inactive_on_both_sides(ratio, adv, expected, clipped):
    loss, m = loss_of(ratio, adv)
    assert loss.item() == pytest.approx(expected)
    assert m["clip_fraction"].item() == clipped


def test_sign_of_advantage_sets_gradient_direction():
    lp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    loss, _ = policy_loss(lp, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                          torch.ones(1, 2), S)
    loss.backward()
    assert (lp.grad < 0).all()        # descending raises the logprob of a positive-advantage response


def test_response_mask_excludes_tokens():
    loss, _ = loss_of([1.1, 5.0, 0.1], 1.0, mask=[1, 0, 0])
    assert loss.item() == pytest.approx(-1.1)


def test_token_mean_vs_seq_mean():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate(per_token, mask, "token_mean").item() == pytest.approx(16 / 4)
    assert aggregate(per_token, mask, "seq_mean").item() == pytest.approx((2 + 10) / 2)
    assert aggregate(per_token, mask, "token_mean", normalizer=8).item() == pytest.approx(2.0)
    assert aggregate(per_token, mask, "seq_mean", normalizer=4).item() == pytest.approx(3.0)


def test_kl_estimators_by_hand():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(0.5 - math.log(0.5) - 1)


def test_kl_term_is_added_with_its_coefficient():
    settings = LossSettings(clip_low=0.2, clip_high=0.2, kl_coef=0.1, kl_estimator="k1")
    lp = torch.tensor([[math.log(0.5)]], dtype=torch.float64)
    loss, m = policy_loss(lp, lp.clone(), torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 1), settings,
                          ref_logprobs=torch.tensor([[math.log(0.25)]], dtype=torch.float64))
    assert loss.item() == pytest.approx(-1.0 + 0.1 * math.log(2))
    assert m["kl"].item() == pytest.approx(math.log(2))


def test_truncated_importance_sampling_weights_each_token():
    """Two tokens, ratio 1 (old = new), A = 1: the engine gave them logprob log(0.5) and log(0.1) while the
    actor says log(0.4): weights 0.8 and min(4, cap 2) = 2; loss = -(0.8 + 2) / 2 = -1.4."""
    old = torch.log(torch.tensor([[0.4, 0.4]], dtype=torch.float64))
    engine = torch.log(torch.tensor([[0.5, 0.1]], dtype=torch.float64))
    tis = LossSettings(rollout_correction="tis", tis_cap=2.0)
    loss, m = policy_loss(old.clone(), old, torch.tensor([1.0], dtype=torch.float64), torch.ones_like(old), tis,
                          engine_logprobs=engine)
    assert loss.item() == pytest.approx(-1.4) and m["correction_weight_mean"].item() == pytest.approx(1.4)
    d = math.log(0.4 / 0.5), math.log(0.4 / 0.1)
    assert m["rollout_logprob_diff"].item() == pytest.approx((abs(d[0]) + abs(d[1])) / 2)
    assert m["rollout_kl"].item() == pytest.approx(sum(math.exp(x) - x - 1 for x in d) / 2)
    plain, _ = policy_loss(old.clone(), old, torch.tensor([1.0], dtype=torch.float64), torch.ones_like(old),
                           LossSettings(), engine_logprobs=engine)
    assert plain.item() == pytest.approx(-1.0)
    with pytest.raises(AssertionError, match="needs the engine's logprobs"):
        policy_loss(old.clone(), old, torch.tensor([1.0], dtype=torch.float64), torch.ones_like(old), tis)
