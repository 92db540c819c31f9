"""The plans of the training stages without engines (`stage: reward_model`, `stage: pretrain`): the
actor's TP/PP/DP layout on every rank (a reward model has a scalar head in place of the vocabulary
projection), no inference engines, memory of the update.

A recipe of these stages uses `model`, `actor`, its section (`rm` or `cpt`), `schedule` (steps,
save_every, keep_checkpoints, eval_every, seed), `cluster` and `logging`; a setting of the RL loop that
differs from its default is rejected, so the plan shows everything the run does.
"""

from __future__ import annotations

import dataclasses
import math

from lwz.errors import LwzError
from lwz.recipe.schema import (ActorCfg, AlgoCfg, ArchCfg, DataCfg, EvalCfg, LoggingCfg, Recipe, RewardsCfg, RolloutCfg,
                               ScheduleCfg)

__all__ = ["check_stage_settings", "reward_model_batches", "pretrain_batches"]

# Sections and settings only the RL loop reads.
_RL_SECTIONS = {"rollout": RolloutCfg, "rewards": RewardsCfg, "algo": AlgoCfg, "data": DataCfg, "eval": EvalCfg}
_RL_SETTINGS = (("schedule", ScheduleCfg, "prompts_per_step"), ("actor", ActorCfg, "vocab_chunk_tokens"),
                ("logging", LoggingCfg, "samples_per_step"))


_STAGE_SECTIONS = {"reward_model": "rm", "pretrain": "cpt"}


def check_stage_settings(recipe: Recipe) -> None:
    """LwzError for a setting the recipe's stage does not read (the RL loop's in a reward-model or
    pretraining run, another stage's section in any run)."""
    for stage, section in _STAGE_SECTIONS.items():
        value = getattr(recipe, section)
        if recipe.stage != stage and value != type(value)():
            raise LwzError(None, section, f"is read by stage {stage} only; remove it (or set stage={stage})")
    if recipe.stage == "grpo":
        return
    for name, cls in _RL_SECTIONS.items():
        if getattr(recipe, name) != cls():
            changed = next(f.name for f in dataclasses.fields(cls) if getattr(getattr(recipe, name), f.name)
                           != getattr(cls(), f.name))  # fmt: skip
            raise LwzError(None, f"{name}.{changed}", f"is not used by stage {recipe.stage}; remove it")
    for section, cls, key in _RL_SETTINGS:
        if getattr(getattr(recipe, section), key) != getattr(cls(), key):
            raise LwzError(None, f"{section}.{key}", f"is not used by stage {recipe.stage}; remove it")
    if recipe.stage == "pretrain":
        if not recipe.cpt.sources:
            raise LwzError(None, "cpt.sources", "no sources given (text/JSONL/parquet files, folders or hf:NAME)")
        return
    if not recipe.rm.pairs:
        raise LwzError(None, "rm.pairs", "no preference pairs given (JSONL/parquet files, folders or hf:NAME)")


def reward_model_batches(recipe: Recipe, arch: ArchCfg, dp: int) -> tuple[int, int]:
    """(sequences per step, per DP rank) of a reward-model run, after checking the batch settings."""
    rm, actor = recipe.rm, recipe.actor
    if rm.pairs_per_step < dp:
        raise LwzError(None, "rm.pairs_per_step", f"{rm.pairs_per_step} pairs cannot feed {dp} data-parallel ranks")
    if actor.micro_batch_tokens < 2 * rm.max_length:
        raise LwzError(None, "actor.micro_batch_tokens", f"{actor.micro_batch_tokens} cannot hold one pair of "
                       f"rm.max_length = {rm.max_length} tokens (both answers of a pair share a micro-batch: "
                       f"need >= {2 * rm.max_length})")
    if rm.max_length > arch.max_position_embeddings:
        raise LwzError(None, "rm.max_length", f"{rm.max_length} exceeds the model's context of "
                       f"{arch.max_position_embeddings} tokens")
    return 2 * rm.pairs_per_step, 2 * math.ceil(rm.pairs_per_step / dp)


def pretrain_batches(recipe: Recipe, arch: ArchCfg, dp: int) -> tuple[int, int]:
    """(rows per step, per DP rank) of a pretraining run, after checking the batch settings."""
    cpt, actor = recipe.cpt, recipe.actor
    if cpt.tokens_per_step % cpt.seq_length:
        raise LwzError(None, "cpt.tokens_per_step", f"{cpt.tokens_per_step} is not a multiple of cpt.seq_length = "
                       f"{cpt.seq_length}")
    rows = cpt.tokens_per_step // cpt.seq_length
    if rows < dp:
        raise LwzError(None, "cpt.tokens_per_step", f"{rows} rows of {cpt.seq_length} tokens cannot feed {dp} "
                       "data-parallel ranks")
    if actor.micro_batch_tokens < cpt.seq_length:
        raise LwzError(None, "actor.micro_batch_tokens", f"{actor.micro_batch_tokens} holds no row of "
                       f"cpt.seq_length = {cpt.seq_length} tokens")
    if actor.sequence_parallel and cpt.seq_length % actor.tp:
        raise LwzError(None, "cpt.seq_length", f"{cpt.seq_length} does not split over actor.tp = {actor.tp} "
                       "(sequence parallelism)")
    if cpt.seq_length > arch.max_position_embeddings:
        raise LwzError(None, "cpt.seq_length", f"{cpt.seq_length} exceeds the model's context of "
                       f"{arch.max_position_embeddings} tokens")
    return rows, math.ceil(rows / dp)
