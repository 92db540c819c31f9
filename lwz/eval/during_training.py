"""Evaluation during training: a benchmark on the loop's live rollout engine (it holds the current weights).

Every rank calls `evaluate_during_training` at the same step (SPMD: the ranks of one engine must
generate together). Every engine answers the same prompts with the same seed; rank 0 writes the
results to RUN/eval/BENCH/step-XXXXXXXX/ (the layout `lwz eval RUN --step N` uses), the other ranks
write theirs to a temporary folder that is deleted.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch.distributed as dist

from lwz.eval.run import GenerationSettings, run_benchmark
from lwz.recipe.schema import Recipe
from lwz.engines.vllm_engine import VllmEngine

log = logging.getLogger(__name__)


def eval_settings(recipe: Recipe) -> GenerationSettings:
    """How the policy answers the benchmark: `recipe.eval`, with nulls taken from `recipe.rollout`.

    Temperature and top-p are the benchmark's (GenerationSettings' defaults), not the rollout's;
    the seed is the run's, so every evaluation of a run samples alike. The plan checked that
    `eval.max_tokens` fits the rollout engine.
    """
    cfg, rollout = recipe.eval, recipe.rollout
    return GenerationSettings(template=cfg.template or rollout.template, chat_template=rollout.chat_template,
                              max_tokens=cfg.max_tokens or rollout.max_tokens, limit=cfg.limit, seed=recipe.schedule.seed)


def eval_folder(run_dir: Path, bench: str, step: int) -> Path:
    """Where the evaluation of `step` goes."""
    return Path(run_dir) / "eval" / bench / f"step-{step:08d}"


def evaluate_during_training(engine: VllmEngine, recipe: Recipe, step: int, run_dir: Path) -> dict[str, float]:
    """Run `recipe.eval.bench` on the (awake, freshly synced) `engine`; returns `eval/BENCH/...` metrics
    (score, items, seconds, ...)."""
    bench, settings = recipe.eval.bench, eval_settings(recipe)
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0:
        out_dir = eval_folder(run_dir, bench, step)
        summary = run_benchmark(bench, engine, settings, out_dir)
        log.info("step %d: %s score %s over %d items in %.1f s -> %s", step, bench, summary["score"],
                 summary["items"], summary["seconds"], out_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="lwz-eval-") as scratch:
            summary = run_benchmark(bench, engine, settings, Path(scratch))
    return summary_metrics(bench, summary)


def summary_metrics(bench: str, summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of a benchmark summary as `eval/BENCH/KEY` (per-domain scores as `.../domain/NAME`)."""
    out = {f"eval/{bench}/{key}": float(value) for key, value in summary.items()
           if isinstance(value, (int, float)) and not isinstance(value, bool)}
    out.update({f"eval/{bench}/domain/{name}": float(value)
                for name, value in (summary.get("per_domain") or {}).items() if value is not None})
    return out
