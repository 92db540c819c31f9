"""What the training stages without engines (`lwz train-rm`, `lwz pretrain`) share: resuming from the
newest checkpoint, step checkpoints, interval tests, and the model folder that appears atomically."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from lwz.actor.checkpoint import checkpoint_folder, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint

__all__ = ["due", "resume", "save_step", "export_once"]

log = logging.getLogger(__name__)


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
