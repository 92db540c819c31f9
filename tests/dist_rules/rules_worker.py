"""The GPU's rules through the loop's own parts in one process (start it with `torch.distributed.run`): the
tiny recipe's Policy, RewardMix (the writing RM on the actor's grid) and ColocatedRollouts (a sleep-capable
rollout engine built asleep with dummy weights), driven first in the loop's order, then in orders a GPU
would not survive. Each refused move's `GpuRuleError` (rule, phase, message) goes to OUT with what the
loop's order did (metrics of one step, its checkpoint saved with the engine asleep).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from lwz.actor.checkpoint import checkpoint_folder
from lwz.actor.policy import Policy
from lwz.plan.resolve import resolve
from lwz.recipe.load import load_recipe
from lwz.rewards.compute import RewardMix
from lwz.algo.scoring import BatchScorer
from lwz.rollout.colocated import ColocatedRollouts
from lwz.rollout.weight_sync import SYNC_BUCKET_BYTES, push_weights
from lwz.engines.vllm_engine import VllmEngine
from lwz.rm.train import tiny_writing_rm_path
from lwz.runtime import init_distributed
from lwz.runtime.gpu_rules import GpuRuleError

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("ckpt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", [
        "rollout.max_tokens=8", "schedule.prompts_per_step=2",
        "rollout.group_size=2"])  # fmt: skip
    plan = resolve(recipe)
    init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed, device="cpu")
    policy = Policy(recipe, plan)
    rewards = RewardMix.from_recipe(recipe, plan)
    rollouts = ColocatedRollouts(recipe, plan, distributed=False)
    engine, scorer = rollouts.engine, rewards.terms["writing_rm"].scorer
    refused: dict[str, tuple[str, str, str]] = {}

    def refuses(name: str, move) -> None:
        try:
            move()
        except GpuRuleError as e:
            refused[name] = (e.rule, e.phase, str(e))
        else:
            raise AssertionError(f"{name}: not refused")

    def score(batch):
        return rewards.score(batch.texts, batch.samples)

    def unscored(batch):
        return batch

    # before the first sync: the engine is asleep and holds dummy weights
    refuses("generate asleep", lambda: rollouts.next_batch(0, unscored))
    refuses("KV cache before weights", lambda: engine.wake_kv_cache())
    engine.wake("rollout")
    refuses("generate with dummy weights", lambda: rollouts.next_batch(0, unscored))
    engine.sleep(level=2)

    # the loop's order: sync, rollout (the engine sleeps), reward, update, sync, checkpoint (the engine asleep)
    rollouts.resume(0, None, policy.hf_weights)
    refuses("weight load with the KV cache awake",
            lambda: push_weights(policy.hf_weights(), engine, SYNC_BUCKET_BYTES))
    batch, _ = rollouts.next_batch(0, BatchScorer(rewards, mask_truncated=False))   # scored asleep
    update = policy.update(batch)
    sync = rollouts.sync_weights(policy.hf_weights, 1)
    with rollouts.asleep():
        policy.save(checkpoint_folder(args.ckpt, 1), {"step": 1})

    # the order lwz had before put back: the checkpoint with the engine the sync woke
    refuses("save after the weight sync", lambda: policy.save(checkpoint_folder(args.ckpt, 2), {"step": 2}))
    refuses("update with the engine awake", lambda: policy.update(batch))
    refuses("reward with the engine awake", lambda: score(batch))
    engine.sleep(level=1)
    with scorer.weights.on_gpu("reward"):
        refuses("engine wakes beside the reward model", lambda: engine.wake_weights())
        refuses("save beside the reward model", lambda: policy.save(checkpoint_folder(args.ckpt, 2), {"step": 2}))
    # and the reward model's vLLM engine built beside the rollout engine, as before
    refuses("second sleep-capable engine", lambda: VllmEngine(str(tiny_writing_rm_path()), device="cpu",
                                                               dtype="fp32", max_model_len=256, sleep_mode=True,
                                                               name="writing_rm"))
    torch.save({"refused": refused, "update": update, "sync_tensors": sync.tensors,
                "rewards": {k: len(v) for k, v in batch.rewards.items()}}, args.out)


if __name__ == "__main__":
    main()
