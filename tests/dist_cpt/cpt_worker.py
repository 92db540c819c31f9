"""One rank of a real multi-process continual-pretraining run over gloo (start it with `torch.distributed.run`;
rank 0 writes the results to OUT as a torch file): `PretrainLearner` on the tiny Qwen2 takes STEPS steps on
fixed packed rows (random documents of 3-20 tokens, each ended by EOD) and measures a held-out row set's
loss before and after."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import torch

from lwz.recipe.load import load_recipe

REPO = Path(__file__).resolve().parents[2]
EOD, SEQ = 16320, 32   # <|endoftext|> of the tiny model


def rows(seed: int, count: int):
    from lwz.cpt.packing import pack_row

    rng = np.random.default_rng(seed)
    stream: list[int] = []
    while len(stream) < count * SEQ + 1:
        stream += rng.integers(0, 2000, rng.integers(3, 20)).tolist() + [EOD]
    return [pack_row(np.array(stream[i * SEQ:(i + 1) * SEQ + 1]), EOD) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sequence-parallel", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    world = int(os.environ["WORLD_SIZE"])
    from lwz.cpt.learner import PretrainLearner
    from lwz.runtime import destroy_distributed, init_distributed

    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", [
        f"actor.tp={args.tp}", f"actor.pp={args.pp}", f"cluster.gpus_per_node={world}", "actor.lr=1e-3",
        f"actor.sequence_parallel={str(args.sequence_parallel).lower()}", f"actor.micro_batch_tokens={2 * SEQ}",
        "actor.grad_clip=1.0", "rewards.terms=[{name: length}]",
    ])  # fmt: skip
    init_distributed(tp=args.tp, pp=args.pp, seed=recipe.schedule.seed)
    learner = PretrainLearner(recipe.model, recipe.actor, args.steps)
    train, held = rows(0, 8), rows(1, 4)
    before = learner.loss(held)
    metrics = [learner.step(train) for _ in range(args.steps)]
    result = {"metrics": metrics, "before": before, "after": learner.loss(held)}
    if int(os.environ["RANK"]) == 0:
        torch.save(result, args.out)
    destroy_distributed()


if __name__ == "__main__":
    main()
