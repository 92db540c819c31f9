"""The GPU's rules kept on CPU, through the loop's own parts (`dist_rules/rules_worker.py`: Policy, RewardMix,
ColocatedRollouts and VllmEngine in one process): the loop's order passes; the order lwz had before (the
checkpoint with the engine the sync woke, a reward-model vLLM engine beside the rollout engine) and every
other broken rule is refused with the rule and the phase named, as vLLM or the GPU's memory would refuse it."""

from __future__ import annotations

import pytest
from dist_actor.launch import REPO, run_distributed

from lwz.runtime.gpu_rules import ONE_ENGINE, PHASE_ALONE, SERVE_AWAKE, WEIGHTS_FIRST

pytestmark = pytest.mark.slow
WORKER = REPO / "tests" / "dist_rules" / "rules_worker.py"

EXPECTED = {  # move -> (rule, phase)
    "save after the weight sync": (PHASE_ALONE, "save"),
    "second sleep-capable engine": (ONE_ENGINE, "start-up"),
    "update with the engine awake": (PHASE_ALONE, "update"),
    "reward with the engine awake": (PHASE_ALONE, "reward"),
    "engine wakes beside the reward model": (PHASE_ALONE, "sync"),
    "save beside the reward model": (PHASE_ALONE, "save"),
    "KV cache before weights": (WEIGHTS_FIRST, "sync"),
    "weight load with the KV cache awake": (WEIGHTS_FIRST, "sync"),
    "generate asleep": (SERVE_AWAKE, "rollout"),
    "generate with dummy weights": (SERVE_AWAKE, "rollout"),
}


@pytest.fixture(scope="module")
def result(module_folder) -> dict:
    from lwz.rm.train import tiny_writing_rm_path

    tiny_writing_rm_path()
    folder = module_folder("rules")
    return run_distributed(1, folder / "out.pt", WORKER, folder / "out.pt", folder / "ckpt", timeout=600)


def test_the_loops_order_keeps_the_rules(result):
    assert result["update"]["grad_norm"] > 0 and result["sync_tensors"] > 0
    assert result["rewards"] == {"length": 4, "format": 4, "writing_rm": 4}


def test_every_broken_rule_is_refused_naming_rule_and_phase(result):
    refused = result["refused"]
    for move, message in sorted((m, r[2]) for m, r in refused.items()):
        print(f"\n{move}: {message}", end="")
    assert {move: (rule, phase) for move, (rule, phase, _) in refused.items()} == EXPECTED
    assert "while the rollout engine is awake" in refused["save after the weight sync"][2]
    assert "the writing_rm engine is built while the rollout engine exists" in \
        refused["second sleep-capable engine"][2]
    assert "CuMemAllocator" in refused["second sleep-capable engine"][2]
