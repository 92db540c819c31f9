"""One rank of the reward-model engine check, the loop's code path over real gloo processes (start it
with `torch.distributed.run`; rank 0 writes the results to OUT as a torch file).

Each rank: `init_distributed`, the loop's rollout engine, then `RewardMix.from_recipe(recipe, plan)`,
which builds this rank's writing-RM engine where the plan places it (RM_TP ranks per engine). The
rewards of fixed responses, how many responses each rank's engine scored, and the rollout engine's
greedy output before and after the reward model was built and used go to OUT.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist

from lwz.plan.resolve import resolve
from lwz.recipe.load import load_recipe
from lwz.rewards.compute import RewardMix
from lwz.rm.data import synthetic_pairs
from lwz.rollout.step_rollout import rollout_engine
from lwz.rollout.vllm_engine import SamplingSettings
from lwz.runtime import init_distributed

REPO = Path(__file__).resolve().parents[2]
GREEDY = SamplingSettings(group_size=1, temperature=0.0, top_p=1.0, max_tokens=8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--rm-tp", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    world = int(os.environ["WORLD_SIZE"])
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", [
        f"cluster.gpus_per_node={world}", "rollout.max_prompt_tokens=64", "rollout.max_tokens=8",
        f"rewards.terms.2.params.tp={args.rm_tp}"])  # fmt: skip
    plan = resolve(recipe)
    runtime = init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed, device="cpu")
    engine = rollout_engine(recipe, plan.device, distributed=runtime.world_size > 1)
    before = engine.generate(["Write a story about a lighthouse."], GREEDY)[0][0].response_ids
    rewards = RewardMix.from_recipe(recipe, plan)

    pairs = synthetic_pairs(sentences_per_answer=2)[:8]
    responses = [f"<think>plan</think><answer>{text}</answer>" for p in pairs for text in (p.chosen, p.rejected)]
    samples = [{"prompt": p.prompt, "length_range": [10, 40]} for p in pairs for _ in range(2)]
    scores = rewards.score(responses, samples)
    after = engine.generate(["Write a story about a lighthouse."], GREEDY)[0][0].response_ids
    scored: list = [None] * world
    dist.all_gather_object(scored, rewards.terms["writing_rm"].engine.scored) if world > 1 else None
    if runtime.rank == 0:
        torch.save({"scores": scores, "scored": scored if world > 1 else [rewards.terms["writing_rm"].engine.scored],
                    "engines": plan.engine("writing_rm").ranks, "greedy": (before, after)}, args.out)
    if world > 1:
        dist.barrier()


if __name__ == "__main__":
    main()
