"""A continual-pretraining run (`stage: pretrain`), top to bottom: sources -> token shards -> packed rows of
the weighted mixture -> next-token steps -> held-out loss -> checkpoints -> the HF model in RUN/model.

Every rank runs this function (SPMD). Rank 0 tokenizes each source first (the others then read its
shard), every rank builds the same `MixtureOrder`, and step k trains on rows k * R ... (k + 1) * R - 1 of
it, so a resumed run (from the newest checkpoint in RUN/ckpt) continues at the same data position. The
last `cpt.eval_rows` rows of the sources (split by weight) are held out of training.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch.distributed as dist

from lwz.models_local.assets import cache_dir
from lwz.atomic import write_text
from lwz.cpt.corpus import MixtureOrder, TokenShard, tokenize_source
from lwz.cpt.learner import PretrainLearner
from lwz.cpt.packing import PackedRow, pack_row
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.runtime.device import init_distributed
from lwz.runtime.roles import RoleWorld
from lwz.actor.stage_run import export_once, train_stage

__all__ = ["pretrain_stage", "recipe_shards", "EXPORT_FOLDER"]

log = logging.getLogger(__name__)
EXPORT_FOLDER = "model"


def recipe_shards(recipe: Recipe, tokenizer) -> list[TokenShard]:
    """The token shard of every source of `cpt.sources` (tokenized now where none exists yet)."""
    cache = Path(recipe.cpt.cache) if recipe.cpt.cache else cache_dir() / "tokens"
    return [tokenize_source(src.path, tokenizer, cache, text_field=src.text_field, key=f"cpt.sources.{i}.path")
            for i, src in enumerate(recipe.cpt.sources)]  # fmt: skip


class _Rows:
    """Training and held-out rows of the mixture."""

    def __init__(self, recipe: Recipe, shards: list[TokenShard], eod: int):
        cpt = recipe.cpt
        self.shards, self.seq, self.eod = shards, cpt.seq_length, eod
        weights = [src.weight for src in cpt.sources]
        counts = [s.rows(cpt.seq_length) for s in shards]
        held = [math.ceil(cpt.eval_rows * w / sum(weights)) for w in weights]
        self.held = [(c, counts[c] - h + j) for c, h in enumerate(held) for j in range(h)][:cpt.eval_rows]
        self.order = MixtureOrder([n - h for n, h in zip(counts, held)], weights, recipe.schedule.seed)
        self.per_step = cpt.tokens_per_step // cpt.seq_length

    def _row(self, corpus: int, index: int) -> PackedRow:
        return pack_row(self.shards[corpus].row(index, self.seq), self.eod)

    def step(self, step: int) -> list[PackedRow]:
        return [self._row(*self.order[step * self.per_step + i]) for i in range(self.per_step)]

    def held_out(self) -> list[PackedRow]:
        return [self._row(c, j) for c, j in self.held]


def pretrain_stage(recipe: Recipe, plan: Plan, run_dir: Path, world: RoleWorld) -> None:
    """Run (or resume) the recipe's continual pretraining in this rank."""
    from transformers import AutoTokenizer

    runtime = init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed,
                               device="cuda" if plan.device == "gpu" else "cpu", env=world.env,
                               timeout_s=plan.collective_timeout_s)
    rank0, schedule = runtime.rank == 0, recipe.schedule
    tokenizer = AutoTokenizer.from_pretrained(recipe.model.tokenizer or recipe.model.path)
    if rank0:
        recipe_shards(recipe, tokenizer)
    dist.barrier()
    rows = _Rows(recipe, recipe_shards(recipe, tokenizer), tokenizer.eos_token_id)
    held = rows.held_out()
    learner = PretrainLearner(recipe.model, recipe.actor, schedule.steps)
    final = train_stage(recipe, run_dir, learner, batch_of=rows.step, evaluate=lambda: {"eval/loss": learner.loss(held)},
                        shown=("eval/loss", "held-out"), desc="pretrain", rank0=rank0)["eval/loss"]
    out = run_dir / EXPORT_FOLDER
    stamp = {"base": recipe.model.path, "steps": schedule.steps, "eval/loss": final}
    export_once(out, "lwz_pretrain.json", learner.export,
                lambda folder: write_text(folder / "lwz_pretrain.json", json.dumps(stamp, indent=2) + "\n"), rank0)
    if rank0:
        log.info("held-out loss %.4f; the model is in %s", final, out)
