"""Actor -> vLLM weight sync over real gloo processes, the loop's code path (tiny Qwen2, fp32).

`dist_sync/sync_worker.py` at TP=1 (one rank) and TP=2 (two ranks, one rollout engine of tp=1
per rank), on the tiny recipe's model (untied) and on one with tied embeddings: the engines are built
with dummy weights and filled by a first sync (their greedy output is then transformers' on the model
folder); sample, two GRPO updates at lr 1e-3, sync, `export_hf_folder`. After the sync
every engine's greedy output equals transformers' greedy `generate` on the exported actor (and
differs from the pre-update output), and the engines' sampled-token logprobs equal the actor's
teacher-forced logprobs, also at temperature 0.7 (the actor's logits divided by it). After every
weight is perturbed and pushed, the engines' logprobs equal transformers' on the perturbed weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from dist_actor.launch import run_torchrun
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
WORKER = Path(__file__).parents[1] / "dist_sync" / "sync_worker.py"
REPO = WORKER.parents[2]
NEW_TOKENS = 16
LOGPROB_TOLERANCE = 1e-3  # fp32; measured ~2e-6


@pytest.fixture(scope="module")
def tied_qwen2(module_folder) -> Path:
    from lwz.models_local.tiny import TINY_QWEN2_SHAPE, build_qwen2

    return build_qwen2(module_folder("tied") / "tied-qwen2", seed=5, tie_word_embeddings=True,
                       **TINY_QWEN2_SHAPE)


@pytest.fixture(scope="module", params=[(1, False), (2, False), (1, True), (2, True)],
                ids=["tp1", "tp2", "tp1-tied", "tp2-tied"])
def synced(request, module_folder, tiny_qwen2, tied_qwen2) -> dict:
    """Run the worker over `tp` ranks; rank 0's results plus the exported folders."""
    tp, tied = request.param
    folder = module_folder(f"sync-tp{tp}")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), LWZ_DEVICE="cpu")
    proc = run_torchrun(tp, WORKER, folder / "out.pt", folder / "export", "--tp", str(tp),
                        *(["--model", str(tied_qwen2)] if tied else []), env=env, timeout=300)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = torch.load(folder / "out.pt", weights_only=False)
    result.update(tp=tp, tied=tied, export=folder / "export", perturbed_folder=folder / "perturbed",
                  initial=tied_qwen2 if tied else tiny_qwen2)
    return result


def greedy_transformers(folder: Path, prompts: list[list[int]]) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    out = []
    for prompt_ids in prompts:
        ids = torch.tensor([prompt_ids])
        out.append(hf.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)[0, ids.shape[1]:].tolist())
    return out


def test_engines_built_with_dummy_weights_generate_like_transformers_after_the_first_sync(synced):
    """The rollout engine reads no weights from disk: the first sync (the actor's initial weights) fills it, and
    its first greedy rollout is transformers' greedy `generate` of the actor's model folder."""
    expected = greedy_transformers(synced["initial"], synced["prompt_ids"])
    assert len(expected) >= 4 and all(len(e) == NEW_TOKENS for e in expected)
    for rank, outputs in enumerate(synced["greedy_before"]):
        assert outputs == expected, f"engine of rank {rank}"


def test_synced_engines_generate_like_transformers_on_the_exported_actor(synced):
    assert len(synced["engines"]) == synced["tp"]  # one rollout engine per rank
    expected = greedy_transformers(synced["export"], synced["prompt_ids"])
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


def test_actor_logprobs_are_tempered_like_the_engines(synced):
    """At T = 0.7 the actor's old logprobs are the engine's processed logprobs; at T = 1 they are not."""
    gap, tokens = synced["tempered"]
    wrong, _ = synced["tempered_at_t1"]
    print(f"\nT=0.7 mean |engine - actor| {gap:.2e} over {tokens} tokens; actor at T=1: {wrong:.2e}")
    assert tokens > 100 and gap < 1e-3 < 0.01 < wrong


def test_perturbed_weights_reach_the_engines(synced):
    """Every weight perturbed, pushed: the engines' logprobs are transformers' on the perturbed weights
    (a tied output layer included)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(synced["perturbed_folder"], dtype=torch.float32)
    assert hf.config.tie_word_embeddings == synced["tied"]
    diffs = []
    for prompt, response, logprobs in synced["perturbed"]:
        with torch.no_grad():
            out = hf(torch.tensor([prompt + response])).logits[0, len(prompt) - 1:-1].log_softmax(-1)
        diffs.append((out.gather(1, torch.tensor(response)[:, None])[:, 0] - torch.tensor(logprobs)).abs())
    mean = torch.cat(diffs).mean().item()
    print(f"\nperturb-and-push (tied={synced['tied']}, tp={synced['tp']}): mean |engine - transformers| {mean:.2e}")
    assert mean < 1e-5
