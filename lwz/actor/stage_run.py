"""What the training stages without engines (`lwz train-rm`, `lwz pretrain`) share: their step loop
(`train_stage`: resume from the newest checkpoint, step, evaluate, log, save), interval tests, and the model
folder that appears atomically. Each stage is its data preparation plus one call of `train_stage`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from lwz.actor.checkpoint import checkpoint_folder, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from lwz.recipe.schema import Recipe
from lwz.track import Tracker

__all__ = ["due", "export_once", "resume", "save_step", "train_stage"]

log = logging.getLogger(__name__)


def train_stage(recipe: Recipe, run_dir: Path, learner: Any, *, batch_of: Callable[[int], Any],
                evaluate: Callable[[], dict[str, float]], shown: tuple[str, str], desc: str, rank0: bool
                ) -> dict[str, float]:
    """The stage's steps from the newest checkpoint on: `learner.step(batch_of(step))` (a learner with
    `model`, `optimizer`, `optimizer_steps` and `step`), `evaluate()` before the first step and every
    `schedule.eval_every`, metrics logged, checkpoints every `schedule.save_every` and at the end, a progress
    bar showing the loss and the `shown` = (metric, label) evaluation. Returns the final evaluation (the last
    step's, not run twice)."""
    schedule = recipe.schedule
    start = resume(run_dir, learner.model, learner.optimizer)
    learner.optimizer_steps = start
    key, label = shown
    last: dict[str, float] | None = None   # the evaluation after the last step (`due` always holds there)
    with Tracker(run_dir, recipe, enabled=rank0, resume_step=start + 1) as tracker:
        if start == 0:
            tracker.log(0, evaluate())
        steps = tqdm(range(start, schedule.steps), initial=start, total=schedule.steps, disable=not rank0,
                     desc=desc, unit="step", dynamic_ncols=True)
        for step in steps:
            metrics = learner.step(batch_of(step))
            done = step + 1
            if due(done, schedule.eval_every, schedule.steps):
                last = evaluate()
                metrics.update(last)
            tracker.log(done, metrics)
            if rank0:
                steps.set_postfix_str(f"loss {metrics['loss']:.3f}" + (f" {label} {metrics[key]:.3f}" if key in metrics else ""))
            if due(done, schedule.save_every, schedule.steps):
                save_step(run_dir, done, learner.model, learner.optimizer, schedule.keep_checkpoints, rank0)
    return last if last is not None else evaluate()   # a run resumed at its end evaluates here


def due(done: int, every: int, total: int) -> bool:
    """Whether step `done` (counted from 1) is on the interval `every` (0: never) or the last one."""
    return done == total or (every > 0 and done % every == 0)


def resume(run_dir: Path, model: torch.nn.Module, optimizer) -> int:
    """Collective: load the newest checkpoint of RUN/ckpt into `model` and `optimizer`; its step (0: none)."""
    checkpoint = latest_checkpoint(run_dir / "ckpt")
    if checkpoint is None:
        return 0
    step = load_checkpoint(checkpoint, model, optimizer)["extra"]["step"]
    log.info("resumed from %s at step %d", checkpoint, step)
    return step


def save_step(run_dir: Path, step: int, model: torch.nn.Module, optimizer, keep: int, rank0: bool) -> None:
    """Collective: checkpoint after `step` in RUN/ckpt, keeping the newest `keep`."""
    save_checkpoint(checkpoint_folder(run_dir / "ckpt", step), model, optimizer,
                    {"optimizer_steps": step, "extra": {"step": step}})
    if rank0:
        prune_checkpoints(run_dir / "ckpt", keep=keep)


def export_once(out: Path, complete: str, export: Callable[[Path], None], finish: Callable[[Path], None],
                rank0: bool) -> None:
    """Collective: `export(staging)` on every rank, `finish(staging)` on rank 0 (extra files), then the
    folder is renamed to `out`; left alone when `out/complete` exists (a requeued run that already wrote it)."""
    if (out / complete).is_file():
        return
    staging = out.with_name(f".{out.name}.staging")
    if rank0 and staging.exists():
        shutil.rmtree(staging)
    dist.barrier()
    export(staging)
    if rank0:
        finish(staging)
        staging.rename(out)
    dist.barrier()
