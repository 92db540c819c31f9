"""Actor checkpoints: megatron `dist_checkpointing` (reshardable over TP/PP/DP), written atomically.

Layout under a run's `ckpt/`: one folder per saved step (`step-00000010/`) holding the sharded
model and optimizer, `common.pt` (every rank's RNG states), `state.pt` (the caller's state, its number
lists as tensors: a partial rollout's pool, a batch generated ahead), `extra.json` (the state's scalar entries,
readable) and `optimizer.json` (the optimizer's classes: a load into
another optimizer is refused before anything is read); a `latest` file names the newest complete folder.
A save goes to `<folder>.tmp-<id>` first; after every rank has written, rank 0 renames it into
place and then rewrites `latest`, so a crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import shutil
import uuid
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import torch

from lwz import atomic
from lwz.errors import LwzError
from lwz.actor.model import unwrap_model
from lwz.actor.optim_checkpoint import load_optimizer, prepare_for_load
from lwz.runtime.lifetime import die_with_parent
from lwz.runtime.rng import restore_rng_states, rng_states
from lwz.tensor_state import pack, unpack

__all__ = ["checkpoint_folder", "latest_checkpoint", "save_checkpoint", "load_checkpoint", "load_model_weights",
           "optimizer_classes"]

log = logging.getLogger(__name__)

LATEST = "latest"
EXTRA = "extra.json"
STATE = "state.pt"   # the caller's whole state, number lists as tensors (lwz.tensor_state)
OPTIMIZER = "optimizer.json"
_TMP = ".tmp-"
# The distributed optimizer's checkpoint format that reshards over TP, PP and DP, gathered the memory-efficient
# way: over gloo into host memory on DP rank 0 (the default gathers every DP shard on every rank's GPU).
_METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True,
             "singleton_local_shards": False, "distrib_optim_fully_reshardable_mem_efficient": True}  # fmt: skip


def checkpoint_folder(ckpt_root: str | os.PathLike, step: int) -> Path:
    """The folder of the checkpoint of `step` under a run's `ckpt/`."""
    return Path(ckpt_root) / f"step-{step:08d}"


def _is_complete(folder: Path) -> bool:
    return _TMP not in folder.name and (folder / EXTRA).is_file() and (folder / "metadata.json").is_file()


def latest_checkpoint(ckpt_root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under `ckpt_root`: the one `latest` names, else the highest step."""
    root = Path(ckpt_root)
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if _is_complete(named):
            return named
        log.warning("%s names %s, which is not a complete checkpoint; scanning", pointer, named)
    complete = sorted(f for f in root.glob("step-*") if f.is_dir() and _is_complete(f)) if root.is_dir() else []
    return complete[-1] if complete else None


def prune_checkpoints(ckpt_root: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (never the one `latest` names); returns them."""
    root = Path(ckpt_root)
    complete = sorted(f for f in root.glob("step-*") if f.is_dir() and _is_complete(f))
    newest = latest_checkpoint(root)
    doomed = [f for f in complete[:-keep] if f != newest] if keep > 0 else []
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed


def step_of(folder: str | os.PathLike) -> int:
    """The step a checkpoint folder holds (`step-00000010` -> 10)."""
    return int(Path(folder).name.removeprefix("step-"))


def _sharded_state(model: torch.nn.Module, optimizer, is_loading: bool) -> dict[str, Any]:
    model_state = unwrap_model(model).sharded_state_dict(metadata=_METADATA)
    state: dict[str, Any] = {"model": model_state}
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(model_state, is_loading=is_loading, metadata=_METADATA)
    return state


def _layout() -> dict[str, int]:
    from megatron.core import parallel_state

    return {"world": torch.distributed.get_world_size(), "tp": parallel_state.get_tensor_model_parallel_world_size(),
            "pp": parallel_state.get_pipeline_model_parallel_world_size()}  # fmt: skip


def save_checkpoint(folder: str | os.PathLike, model: torch.nn.Module, optimizer, state: dict[str, Any]) -> Path:
    """Collective: save model, optimizer, RNG states and the JSON-able `state` to `folder`, atomically.

    Replaces an existing `folder` (the old one is removed only after the new one is in place)
    and points `latest` in the parent at it.
    """
    from megatron.core import dist_checkpointing

    folder = Path(folder)
    rank = torch.distributed.get_rank()
    token = [uuid.uuid4().hex[:12] if rank == 0 else None]
    torch.distributed.broadcast_object_list(token, src=0)
    tmp = folder.with_name(f"{folder.name}{_TMP}{token[0]}")
    if rank == 0:
        tmp.mkdir(parents=True)
    rngs: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(rngs, rng_states())
    torch.distributed.barrier()
    sharded = _sharded_state(model, optimizer, is_loading=False)
    sharded["lwz"] = {"rng": pickle.dumps(rngs), "layout": _layout()}
    _writer_queue_dying_with_rank()
    dist_checkpointing.save(sharded, str(tmp))
    torch.distributed.barrier()
    if rank == 0:
        torch.save(pack(state), tmp / STATE)
        atomic.write_text(tmp / EXTRA, json.dumps(_readable(state), indent=2, sort_keys=True))
        if optimizer is not None:
            atomic.write_text(tmp / OPTIMIZER, json.dumps({"classes": optimizer_classes(optimizer)}, indent=2))
        _fsync_tree(tmp)
        _move_into_place(tmp, folder)
        atomic.write_text(folder.parent / LATEST, folder.name + "\n")
        log.info("saved checkpoint %s", folder)
    torch.distributed.barrier()
    return folder


def _writer_queue_dying_with_rank() -> None:
    """megatron-core's checkpoint writer collects its results through a queue served by a spawned manager
    process (`filesystem_async._get_write_results_queue`) that outlives a SIGKILLed rank, holding its output
    open; lwz starts that server itself, set to die with the rank."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
        manager.start(initializer=die_with_parent)
        filesystem_async._results_queue = manager.Queue()


def _readable(state: dict[str, Any]) -> dict[str, Any]:
    """The state's scalar entries at any depth (the step, counters, positions), for a person reading the
    checkpoint; lists (a pool's tokens, a batch) are only in the tensor file."""
    return {key: _readable(value) if isinstance(value, dict) else value for key, value in state.items()
            if isinstance(value, dict) or value is None or isinstance(value, (bool, int, float, str))}


def _saved_state(folder: Path, common: dict[str, Any]) -> dict[str, Any]:
    """The caller's state: from the tensor file (a checkpoint of an older lwz pickled it in the common state)."""
    if (folder / STATE).is_file():
        return unpack(torch.load(folder / STATE, weights_only=True))
    return pickle.loads(common["state"])


def _move_into_place(tmp: Path, folder: Path) -> None:
    old = folder.with_name(f"{folder.name}{_TMP}old-{uuid.uuid4().hex[:12]}")
    if folder.exists():
        os.rename(folder, old)
    os.rename(tmp, folder)
    atomic.fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            atomic.fsync_dir(path)
    atomic.fsync_dir(folder)


def load_checkpoint(folder: str | os.PathLike, model: torch.nn.Module, optimizer) -> dict[str, Any]:
    """Collective: load `folder` into `model` and `optimizer` (any TP/PP/DP layout); returns the saved state.

    RNG states are restored per rank when the layout is the one saved; otherwise every rank takes
    rank 0's CPU/Python/NumPy states and keeps its freshly seeded model-parallel tracker.
    """
    from megatron.core import dist_checkpointing

    folder = Path(folder)
    if optimizer is not None:
        check_optimizer(folder, optimizer)
        prepare_for_load(optimizer)
    sharded = _sharded_state(model, optimizer, is_loading=True)
    sharded["lwz"] = {"rng": b"", "layout": {}}
    loaded = dist_checkpointing.load(sharded, str(folder))
    unwrap_model(model).load_state_dict(loaded["model"])
    if optimizer is not None:
        load_optimizer(optimizer, loaded["optimizer"])
    common = loaded["lwz"]
    rngs = pickle.loads(common["rng"])
    same_layout = common["layout"] == _layout()
    if not same_layout:
        log.info("checkpoint layout %s differs from %s: RNG tracker states are not restored",
                 common["layout"], _layout())  # fmt: skip
    restore_rng_states(rngs[torch.distributed.get_rank()] if same_layout else rngs[0], with_tracker=same_layout)
    log.info("loaded checkpoint %s", folder)
    return _saved_state(folder, common)


def optimizer_classes(optimizer) -> list[str]:
    """Each (chained) megatron optimizer and the torch optimizer it runs, e.g.
    `DistributedOptimizer(torch.optim.adamw.AdamW)`."""
    def name(cls: type) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    return [f"{type(part).__name__}({name(type(part.optimizer))})"
            for part in getattr(optimizer, "chained_optimizers", [optimizer])]


def check_optimizer(folder: Path, optimizer) -> None:
    """LwzError when the checkpoint in `folder` was saved by another optimizer than `optimizer` (its states
    would not load, or load wrong); a checkpoint without the record (older lwz) is taken as it is."""
    record = folder / OPTIMIZER
    if not record.is_file():
        log.warning("%s records no optimizer class: assuming %s", folder, optimizer_classes(optimizer))
        return
    saved, current = json.loads(record.read_text())["classes"], optimizer_classes(optimizer)
    if saved != current:
        raise LwzError(str(folder), "optimizer", f"saved by {', '.join(saved)}; this run builds "
                       f"{', '.join(current)}, into which its states do not load: resume with the settings it "
                       "was saved with (actor.distributed_optimizer, model.dtype) and the same lwz")


def load_model_weights(folder: str | os.PathLike, model: torch.nn.Module) -> dict[str, Any]:
    """Collective: load only the model weights of `folder` (e.g. for export); returns the saved state."""
    from megatron.core import dist_checkpointing

    sharded = _sharded_state(model, None, is_loading=True)
    sharded["lwz"] = {"rng": b""}
    loaded = dist_checkpointing.load(sharded, str(folder))
    unwrap_model(model).load_state_dict(loaded["model"])
    return _saved_state(Path(folder), loaded["lwz"])
