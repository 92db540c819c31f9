"""Vocab-parallel logprobs and entropy (TP=2) against a plain log_softmax; Policy logprobs (TP=2, PP=2) against HF."""

from __future__ import annotations

import pytest
import torch
from dist_actor.launch import run_worker

pytestmark = pytest.mark.slow


def _max_diff(pairs) -> float:
    return max((a.double() - b.double()).abs().max().item() for a, b in pairs)


def test_tp2_logprobs_entropy_and_grad_match_log_softmax(tmp_path, tiny_qwen2):
    result = run_worker("logprobs", 2, tmp_path / "out.pt", "--tp", "2")
    logprobs, expected = result["fn_logprobs"]
    assert logprobs.dtype == torch.float32
    assert _max_diff([result["fn_logprobs"]]) < 1e-5
    assert _max_diff([result["fn_entropy"]]) < 1e-5
    assert _max_diff([result["fn_grad"]]) < 1e-6  # d logp / d logits = onehot - softmax; TP padding gets 0
    assert [t.shape[0] for t in result["policy_logprobs"]] == [7, 6, 9, 5]
    assert _max_diff(zip(result["policy_logprobs"], result["hf_logprobs"])) < 1e-4


def test_pp2_compute_logprobs_match_hf(tmp_path, tiny_qwen2):
    result = run_worker("logprobs", 2, tmp_path / "out.pt", "--pp", "2")
    assert _max_diff(zip(result["policy_logprobs"], result["hf_logprobs"])) < 1e-4
