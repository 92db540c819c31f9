"""Actor -> vLLM weight sync over real gloo processes, the loop's code path (tiny Qwen2, fp32).

`dist_sync/sync_worker.py` at TP=1 (one rank) and TP=2 (two ranks, one rollout engine of tp=1
per rank): sample, two GRPO updates at lr 1e-3, `push_weights(policy.hf_weights(), engine)`,
`export_hf_folder`. After the sync every engine's greedy output equals transformers' greedy
`generate` on the exported actor (and differs from the pre-update output), and the engines'
sampled-token logprobs equal the actor's teacher-forced logprobs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_models import tiny_qwen2  # noqa: F401
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("dist_sync") / "sync_worker.py"
REPO = WORKER.parents[2]
NEW_TOKENS = 16
LOGPROB_TOLERANCE = 1e-3  # fp32; measured ~2e-6


@pytest.fixture(scope="module", params=[1, 2], ids=["tp1", "tp2"])
def synced(request, tmp_path_factory, tiny_qwen2) -> dict:  # noqa: F811
    """Run the worker over `tp` ranks; rank 0's results plus the exported folder."""
    tp = request.param
    folder = tmp_path_factory.mktemp(f"sync-tp{tp}")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), LWZ_DEVICE="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={tp}", str(WORKER),
           str(folder / "out.pt"), str(folder / "export"), "--tp", str(tp)]  # fmt: skip
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = torch.load(folder / "out.pt", weights_only=False)
    result.update(tp=tp, export=folder / "export")
    return result


def test_synced_engines_generate_like_transformers_on_the_exported_actor(synced):
    from transformers import AutoModelForCausalLM

    assert len(synced["engines"]) == synced["tp"]  # one rollout engine per rank
    hf = AutoModelForCausalLM.from_pretrained(synced["export"], dtype=torch.float32)
    expected = []
    for prompt_ids in synced["prompt_ids"]:
        ids = torch.tensor([prompt_ids])
        expected.append(hf.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)[0, ids.shape[1]:].tolist())
    assert len(expected) >= 4 and all(len(e) == NEW_TOKENS for e in expected)
    for rank, outputs in enumerate(synced["greedy_after"]):
        assert outputs == expected, f"engine of rank {rank}"
    for before in synced["greedy_before"]:
        assert sum(a != b for a, b in zip(before, expected)) >= 1, "the update did not reach the engine"


def test_engine_logprobs_match_the_actor_before_and_after(synced):
    for key in ("gap_before", "gap_after"):
        gap, tokens = synced[key]
        assert tokens > 100 and gap < LOGPROB_TOLERANCE, (key, gap, tokens)  # 5 prompts x 2 samples x <= 16


def test_updates_moved_the_weights_and_the_sync_reports_them(synced):
    first, second = synced["updates"]
    assert first["grad_norm"] > 0 and second["approx_kl_old"] > 1e-3  # the first step changed the policy
    exported = load_file(str(synced["export"] / "model.safetensors"))
    sync = synced["sync"]
    assert sync["tensors"] == len(exported) and sync["buckets"] == 1 and sync["seconds"] > 0
    assert sync["bytes"] == sum(t.numel() * t.element_size() for t in exported.values())
