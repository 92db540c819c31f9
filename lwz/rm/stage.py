"""A reward-model run (`stage: reward_model`), top to bottom: pairs -> Bradley-Terry steps -> held-out
accuracy -> checkpoints -> the HF sequence-classification model in RUN/reward_model.

Every rank runs this function (SPMD) with the same pairs in the same order; `RewardLearner` gives
each data-parallel rank its share of a step's pairs. The order is a seeded permutation per epoch, so
a resumed run (from the newest checkpoint in RUN/ckpt) takes the steps it would have taken.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path


from lwz.atomic import write_text
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rm.data import PreferencePair, load_pair_sources, split_pairs
from lwz.rm.learner import Pair, RewardLearner
from lwz.rm.model import encode
from lwz.rm.train import RM_STAMP
from lwz.runtime.device import init_distributed
from lwz.runtime.roles import RoleWorld
from lwz.actor.stage_run import export_once, train_stage

__all__ = ["train_reward_model_stage", "recipe_pairs", "EXPORT_FOLDER"]

log = logging.getLogger(__name__)
EXPORT_FOLDER = "reward_model"


def recipe_pairs(recipe: Recipe) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(training, held-out) pairs of the recipe's `rm` section, every row checked."""
    rm = recipe.rm
    fields = dict(prompt_field=rm.prompt_field, chosen_field=rm.chosen_field, rejected_field=rm.rejected_field,
                  kind_field=rm.kind_field)
    pairs = load_pair_sources(rm.pairs, key="rm.pairs", **fields)
    if rm.eval_pairs:
        return pairs, load_pair_sources(rm.eval_pairs, key="rm.eval_pairs", **fields)
    return split_pairs(pairs, rm.eval_fraction, recipe.schedule.seed)


def _step_pairs(pairs: Sequence[Pair], per_step: int, step: int, seed: int) -> list[Pair]:
    """The pairs of optimizer step `step`: consecutive slices of one seeded permutation per epoch."""
    picked: list[Pair] = []
    position = step * per_step
    while len(picked) < per_step:
        epoch, offset = divmod(position, len(pairs))
        order = list(range(len(pairs)))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        take = order[offset:offset + per_step - len(picked)]
        picked += [pairs[i] for i in take]
        position += len(take)
    return picked


def held_out_accuracy(learner: RewardLearner, pairs: Sequence[Pair], kinds: Sequence[str]) -> dict[str, float]:
    """eval/accuracy (r_chosen > r_rejected), eval/margin and eval/accuracy/KIND over held-out pairs."""
    scores = learner.scores([c for c, _ in pairs] + [r for _, r in pairs])
    margins = [a - b for a, b in zip(scores[:len(pairs)], scores[len(pairs):])]
    result = {"eval/accuracy": sum(m > 0 for m in margins) / len(margins), "eval/margin": sum(margins) / len(margins)}
    for kind in sorted({k for k in kinds if k}):
        ms = [m for m, k in zip(margins, kinds) if k == kind]
        result[f"eval/accuracy/{kind}"] = sum(m > 0 for m in ms) / len(ms)
    return result


def train_reward_model_stage(recipe: Recipe, plan: Plan, run_dir: Path, world: RoleWorld) -> None:
    """Run (or resume) the recipe's reward-model training in this rank."""
    from transformers import AutoTokenizer

    runtime = init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed,
                               device="cuda" if plan.device == "gpu" else "cpu", env=world.env,
                               timeout_s=plan.collective_timeout_s)
    rank0, rm, schedule = runtime.rank == 0, recipe.rm, recipe.schedule
    tokenizer = AutoTokenizer.from_pretrained(recipe.model.tokenizer or recipe.model.path)
    train, held = recipe_pairs(recipe)
    train_ids = [(encode(tokenizer, p.prompt, p.chosen, rm.max_length),
                  encode(tokenizer, p.prompt, p.rejected, rm.max_length)) for p in train]  # fmt: skip
    held_ids = [(encode(tokenizer, p.prompt, p.chosen, rm.max_length),
                 encode(tokenizer, p.prompt, p.rejected, rm.max_length)) for p in held]  # fmt: skip
    kinds = [p.kind for p in held]
    learner = RewardLearner(recipe.model, recipe.actor, schedule.steps, tokenizer.pad_token_id)
    if rank0:
        log.info("%d training pairs, %d held out", len(train), len(held))
    final = train_stage(recipe, run_dir, learner,
                        batch_of=lambda step: _step_pairs(train_ids, rm.pairs_per_step, step, schedule.seed),
                        evaluate=lambda: held_out_accuracy(learner, held_ids, kinds), shown=("eval/accuracy", "eval acc"),
                        desc="reward model", rank0=rank0)
    stamp = {"base": recipe.model.path, "max_length": recipe.rm.max_length, "stage": "reward_model"}

    def finish(folder: Path) -> None:
        write_text(folder / "metrics.json", json.dumps(final, indent=2) + "\n")
        write_text(folder / RM_STAMP, json.dumps(stamp, indent=2) + "\n")

    export_once(run_dir / EXPORT_FOLDER, RM_STAMP, learner.export, finish, rank0)
    if rank0:
        log.info("held-out pairwise accuracy %.3f on %d pairs; reward model in %s", final["eval/accuracy"],
                 len(held), run_dir / EXPORT_FOLDER)

