"""One rank of a real multi-process Bradley-Terry run of the megatron reward model over gloo (start it with
`torch.distributed.run`; rank 0 writes the results to OUT as a torch file).

`RewardLearner` on the tiny Qwen2 backbone (a fresh scalar head) takes STEPS steps on fixed text pairs
(`synthetic_pairs`, encoded as the scorer encodes them), with micro-batches small enough that a step
has several; the losses, accuracies, grad norms, the scores of probe answers after training, and
(with --export) the HF folder written at EXPORT go to OUT.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from lwz.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[2]
MAX_LENGTH = 48


def pairs_and_probes(tokenizer) -> tuple[list[tuple[list[int], list[int]]], list[list[int]], list[tuple[str, str]]]:
    """Eight training pairs (token ids) and six probe (prompt, answer) texts with their ids."""
    from lwz.rm.data import synthetic_pairs
    from lwz.rm.model import encode

    pairs = synthetic_pairs()
    encoded = [(encode(tokenizer, p.prompt, p.chosen, MAX_LENGTH), encode(tokenizer, p.prompt, p.rejected, MAX_LENGTH))
               for p in pairs[:8]]  # fmt: skip
    probes = [(p.prompt, p.chosen) for p in pairs[9:18:3]] + [(p.prompt, p.rejected) for p in pairs[9:12]]
    return encoded, [encode(tokenizer, p, a, MAX_LENGTH) for p, a in probes], probes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sequence-parallel", action="store_true")
    parser.add_argument("--export", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    world = int(os.environ["WORLD_SIZE"])
    from transformers import AutoTokenizer

    from lwz.rm.learner import RewardLearner
    from lwz.runtime import destroy_distributed, init_distributed

    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", [
        f"actor.tp={args.tp}", f"actor.pp={args.pp}", f"cluster.gpus_per_node={world}", "actor.lr=1e-3",
        f"actor.sequence_parallel={str(args.sequence_parallel).lower()}", "actor.micro_batch_tokens=200",
        "actor.grad_clip=1.0", "rewards.terms=[{name: length}]",
    ])  # fmt: skip
    init_distributed(tp=args.tp, pp=args.pp, seed=recipe.schedule.seed)
    tokenizer = AutoTokenizer.from_pretrained(recipe.model.path)
    learner = RewardLearner(recipe.model, recipe.actor, args.steps, tokenizer.pad_token_id)
    pairs, probe_ids, probes = pairs_and_probes(tokenizer)
    before = learner.scores(probe_ids)
    metrics = [learner.step(pairs) for _ in range(args.steps)]
    result = {"metrics": metrics, "before": before, "scores": learner.scores(probe_ids), "probes": probes,
              "probe_ids": probe_ids, "max_length": MAX_LENGTH}
    if args.export:
        learner.export(args.export)
    if int(os.environ["RANK"]) == 0:
        torch.save(result, args.out)
    destroy_distributed()


if __name__ == "__main__":
    main()
