"""GRPO updates of the megatron Policy over real gloo processes (tiny Qwen2, fp32).

A fixed batch of four sequences with advantages +1, -1, +1, -1 and old logprobs from the
initial policy; micro-batches of 32 tokens (two per update). The same three updates at TP=1,
TP=2 (with and without sequence parallelism), PP=2 and DP=2 (distributed optimizer) must give the
same losses and gradient norms.
"""

from __future__ import annotations

import pytest
import torch
from dist_actor.launch import run_worker

pytestmark = pytest.mark.slow

UPDATES = 3
# fp32 sums taken in another order (TP shards, pipeline stages, DP reduce-scatter)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def single(module_folder, tiny_qwen2) -> dict:
    return run_worker("train", 1, module_folder("tp1") / "out.pt", "--updates", str(UPDATES))


def test_advantage_sign_moves_logprobs_and_metrics(single):
    signs = [1, -1, 1, -1]
    for sign, before, after in zip(signs, single["before"], single["after"]):
        assert sign * (after.sum() - before.sum()).item() > 0.1
    first, *rest = single["metrics"]
    # ratio 1 at the first update: loss = -sum_b A_b T_b / sum_b T_b with T = 7, 6, 9, 5
    assert first["loss"] == pytest.approx(-(7 - 6 + 9 - 5) / 27, abs=1e-6)
    assert first["tokens"] == 27 and first["ratio_mean"] == pytest.approx(1.0) and first["clip_fraction"] == 0
    assert all(m["loss"] < first["loss"] for m in rest)  # the surrogate objective improves
    assert all(m["approx_kl_old"] > 0 and m["grad_norm"] > 0 and m["lr"] == 1e-4 for m in rest)
    assert all(9.2 < m["entropy"] < 9.8 for m in single["metrics"])  # near log(16384) = 9.70


@pytest.mark.parametrize("layout", [["--tp", "2"], ["--tp", "2", "--sequence-parallel"], ["--pp", "2"], ["--tp", "1"]],
                         ids=["tp2", "tp2-sequence-parallel", "pp2", "dp2"])
def test_layouts_give_the_same_trajectory(single, layout, tmp_path):
    other = run_worker("train", 2, tmp_path / "out.pt", "--updates", str(UPDATES), *layout)
    for key in ("loss", "grad_norm", "entropy", "approx_kl_old"):
        # a grad norm (~5 here) sums squares in another order per layout: its noise scales with it (5e-6 measured)
        rel = TOLERANCE if key == "grad_norm" else None
        assert [m[key] for m in other["metrics"]] == pytest.approx([m[key] for m in single["metrics"]],
                                                                   abs=TOLERANCE, rel=rel), key
    for a, b in zip(other["after"], single["after"]):
        assert (a - b).abs().max().item() < 1e-4


def assert_same_logprobs(got: list, expected: list) -> None:
    """The resulting policies' log-probabilities equal to fp32 precision: the largest error at most 1e-6 of the
    largest magnitude (near -10 that is a few ulps, where two CPUs sum in their own order)."""
    for a, b in zip(got, expected, strict=True):
        assert (a - b).abs().max().item() <= 1e-6 * b.abs().max().item(), (a, b)


@pytest.mark.parametrize("tp", [1, 2], ids=["tp1", "tp2"])
def test_skipping_the_old_logprob_pass_changes_nothing(tp, tmp_path):
    """On-policy (one mini-batch, one epoch) the old logprobs are the update's own: the same loss, gradient
    norm and resulting policy as with a separate forward pass for them (fp32, 1e-6 relative)."""
    got = run_worker("on_policy", tp, tmp_path / "out.pt", "--tp", str(tp))
    separate, skipped = got["separate"], got["skipped"]
    for key in ("loss", "grad_norm", "entropy", "ratio_mean"):
        assert skipped["metrics"][key] == pytest.approx(separate["metrics"][key], rel=1e-6, abs=1e-9), key
    assert_same_logprobs(skipped["after"], separate["after"])


@pytest.mark.parametrize("dp", [1, 2])
def test_zero_advantage_sequences_are_skipped_with_the_same_update(dp, tmp_path):
    """Sequences with advantage 0 (no KL term) are not run: the loss, gradient norm and resulting policy are
    those of the update that runs them (their tokens stay in the token-mean normaliser)."""
    got = run_worker("zero_advantage", dp, tmp_path / "out.pt")
    skipped, trained = got["skipped"], got["trained"]
    assert skipped["metrics"]["skipped_fraction"] == 0.5 and trained["metrics"]["skipped_fraction"] == 0.0
    assert skipped["metrics"]["tokens"] < trained["metrics"]["tokens"]
    for key in ("loss", "grad_norm"):
        assert skipped["metrics"][key] == pytest.approx(trained["metrics"][key], rel=1e-6), key
    assert_same_logprobs(skipped["after"], trained["after"])


@pytest.mark.parametrize("tp,sp", [(1, False), (2, False), (2, True)], ids=["tp1", "tp2", "tp2-sp"])
def test_the_chunked_projection_equals_the_output_layer(tp, sp, tmp_path):
    """The logits projected 5 positions at a time in the loss (forward and backward), or in one chunk, give
    the loss, logprobs and every gradient of megatron's own output layer on the whole logits (fp32, 1e-6
    relative); so do the gradients made in the forward pass from a predicted per-position gradient (up to a
    scalar: no second projection), and a wrong prediction (the backward projects again)."""
    got = run_worker("projection", tp, tmp_path / "out.pt", "--tp", str(tp), *(["--sequence-parallel"] if sp else []))
    whole = got["output_layer"]
    for name in ("chunked", "one_chunk", "predicted", "mispredicted"):
        chunked = got[name]
        assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-6), name
        for key in ("logprobs", "entropy"):
            assert torch.allclose(chunked[key], whole[key], rtol=1e-6, atol=1e-6), (name, key)
        assert whole["grads"].keys() == chunked["grads"].keys()
        for param, grad in whole["grads"].items():  # relative error of the whole tensor (summation order
            assert grad.abs().max() > 0, param        # differs: single elements of a big sum drift ~1e-6)
            assert (chunked["grads"][param] - grad).norm().item() <= 1e-6 * grad.norm().item(), (name, param)
    assert got["predicted"]["projections"] == got["predicted"]["chunks"] > 1
    assert got["mispredicted"]["projections"] == got["chunked"]["projections"] == 2 * got["chunked"]["chunks"]


@pytest.mark.parametrize("tp", [1, 2], ids=["tp1", "tp2"])
def test_the_update_makes_its_projection_gradients_in_the_forward_pass(tp, tmp_path):
    """The GRPO loss's per-token gradient is known in the projection's forward pass, so the update projects
    once per chunk, not twice, with the same two updates (the second off-policy, ratios away from 1) as
    the backward's recomputation: loss, grad norm, clip fraction and resulting policy (fp32, 1e-6)."""
    got = run_worker("predicted_update", tp, tmp_path / "out.pt", "--tp", str(tp))
    predicted, recomputed = got["predicted"], got["recomputed"]
    for a, b in zip(predicted["metrics"], recomputed["metrics"]):
        for key in ("loss", "grad_norm", "ratio_mean", "clip_fraction"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert predicted["metrics"][1]["ratio_mean"] != pytest.approx(1.0, abs=1e-4)
    assert_same_logprobs(predicted["after"], recomputed["after"])
    assert 2 * predicted["projections"] == recomputed["projections"] > 0


def test_a_sequence_masked_out_of_the_loss_counts_as_absent(tmp_path):
    """`loss_mask` (algo.mask_truncated): the update equals one on the batch without that sequence (its
    tokens leave the token-mean normaliser too)."""
    got = run_worker("masked", 1, tmp_path / "out.pt")
    masked, dropped = got["masked"], got["dropped"]
    for key in ("loss", "grad_norm", "entropy", "tokens"):
        assert masked["metrics"][key] == pytest.approx(dropped["metrics"][key], rel=1e-5, abs=1e-8), key
    for a, b in zip(masked["after"], dropped["after"]):
        assert (a - b).abs().max().item() < 1e-5
