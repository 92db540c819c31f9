"""One rank of the writing-RM serving check, the loop's code path over real gloo processes (start it with
`torch.distributed.run`; rank 0 writes the results to OUT as a torch file).

Each rank: `init_distributed` with the layout's actor grid, the loop's rollout engine (built asleep with
dummy weights, filled from the policy folder as the first sync would), then `RewardMix.from_recipe(recipe,
plan)`, which builds this rank's shard of the tiny writing RM on the actor's grid, in host memory. The
rewards of held-out pairs' answers (and a Chinese answer), the RM's scores of the same inputs in micro-batches
of one sequence, and the rollout engine's greedy output before and after the reward phase go to OUT.
"""

from __future__ import annotations

import argparse
import logging
import os
from importlib.resources import files
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from lwz.plan.resolve import resolve
from lwz.recipe.load import load_recipe
from lwz.rewards.compute import RewardMix
from lwz.rm.data import load_pairs, split_pairs
from lwz.rm.model import encode
from lwz.rm.scoring import score_sequences
from lwz.rollout.step_rollout import rollout_engine
from lwz.rollout.weight_sync import sync_sleeping_engine
from lwz.engines.vllm_engine import SamplingSettings
from lwz.runtime import init_distributed

REPO = Path(__file__).resolve().parents[2]
GREEDY = SamplingSettings(group_size=1, temperature=0.0, top_p=1.0, max_tokens=8)
MAX_LENGTH = 256


def probes() -> tuple[list[str], list[str]]:
    """(prompts, answers): chosen and rejected answers of held-out pairs, and a long Chinese answer."""
    pairs = load_pairs(Path(str(files("lwz") / "assets" / "rm" / "writing_pairs.jsonl")))
    held = split_pairs(pairs, 0.2, seed=0)[1][:12]
    prompts = [p.prompt for p in held] * 2 + ["请写一篇关于秋天的文章。"]
    answers = [p.chosen for p in held] + [p.rejected for p in held] + ["秋天来了，树叶变黄了。" * 40]
    return prompts, answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--tp", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    world = int(os.environ["WORLD_SIZE"])
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", [
        f"cluster.gpus_per_node={world}", f"actor.tp={args.tp}", "rollout.max_prompt_tokens=64",
        "rollout.max_tokens=8", f"rewards.terms.2.params.max_length={MAX_LENGTH}"])  # fmt: skip
    plan = resolve(recipe)
    runtime = init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed, device="cpu")
    engine = rollout_engine(recipe, plan.device, distributed=runtime.world_size > 1)
    weights = load_file(str(Path(recipe.model.path) / "model.safetensors"))
    sync_sleeping_engine(lambda: iter(weights.items()), engine)
    before = engine.generate(["Write a story about a lighthouse."], GREEDY)[0][0].response_ids
    engine.sleep(level=1)   # the reward phase: the engine asleep, its weights kept in host memory
    rewards = RewardMix.from_recipe(recipe, plan)

    prompts, answers = probes()
    responses = [f"<think>plan</think><answer>{a}</answer>" for a in answers]
    scores = rewards.score(responses, [{"prompt": p, "length_range": [10, 40]} for p in prompts])
    term = rewards.terms["writing_rm"]
    sequences = [encode(term.tokenizer, p, a, MAX_LENGTH) for p, a in zip(prompts, answers)]
    with term.scorer.weights.on_gpu("reward"):   # one sequence per micro-batch
        one_by_one = score_sequences(term.scorer.model, sequences, micro_batch_tokens=1, multiple=1)
    engine.wake("rollout")
    after = engine.generate(["Write a story about a lighthouse."], GREEDY)[0][0].response_ids
    if runtime.rank == 0:
        torch.save({"scores": scores, "one_by_one": one_by_one, "prompts": prompts, "answers": answers,
                    "greedy": (before, after), "dp": plan.dp, "tp": plan.tp}, args.out)
    if world > 1:
        dist.barrier()


if __name__ == "__main__":
    main()
