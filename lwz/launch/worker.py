"""One rank of a run: `python -m lwz.launch.worker RUN_DIR` (started by the local launcher, srun or submitit)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lwz.errors import LwzError

if TYPE_CHECKING:
    from lwz.plan.resolve import Plan
    from lwz.recipe.schema import Recipe
    from lwz.runtime.roles import RoleWorld


def run_worker(run_dir: Path) -> None:
    """Load the run folder's resolved recipe, plan it and run this rank's role: train (resuming from the
    last checkpoint) on an actor rank, serve the rollout on an engine rank of its own; reward-model and
    pretraining recipes train on every rank."""
    from lwz.plan.resolve import resolve
    from lwz.recipe.load import load_recipe
    from lwz.runtime.rank_loss import rank_loss
    from lwz.runtime.roles import join_role

    recipe = load_recipe(run_dir / "recipe.yaml")
    plan = resolve(recipe)
    world = join_role(plan)
    try:
        _run_role(recipe, plan, run_dir, world)
    except RuntimeError as error:
        lost = rank_loss(error, run_dir, world.job.rank)
        if lost is None:
            raise
        logging.getLogger(__name__).error("%s", lost)
        raise lost from None
    if world.bridge is not None:
        world.bridge.barrier()   # rank 0 hosts the bridge's store: nobody leaves while others use it


def _run_role(recipe: Recipe, plan: Plan, run_dir: Path, world: RoleWorld) -> None:
    """This rank's part: a stage's training, the GRPO actor, or an engine rank's rollout service."""
    from lwz.rollout.engine_rank import serve_rollout
    from lwz.train import train

    if recipe.stage == "reward_model":
        from lwz.rm.stage import train_reward_model_stage

        train_reward_model_stage(recipe, plan, run_dir, world)
    elif recipe.stage == "pretrain":
        from lwz.cpt.stage import pretrain_stage

        pretrain_stage(recipe, plan, run_dir, world)
    elif world.role == "actor":
        train(recipe, plan, run_dir, world)
    else:
        serve_rollout(recipe, plan, world)


def configure_logging(run_dir: Path | None = None) -> None:
    """lwz's INFO lines on stderr (also under submitit, which installs handlers of its own); vLLM's own
    INFO/WARNING lines (weight reloads, prefix-cache resets, every step) and Python warnings go to the run's
    RUN/logs/libraries.rankN.log rather than the terminal; other libraries show warnings only, torch's C++
    layer errors only (TORCH_CPP_LOG_LEVEL, unless set)."""
    lwz_log = logging.getLogger("lwz")
    lwz_log.setLevel(logging.INFO)
    if not lwz_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
        lwz_log.addHandler(handler)
        lwz_log.propagate = False
    for noisy in ("urllib3", "filelock", "datasets", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if run_dir is None:
        return
    os.environ["VLLM_CONFIGURE_LOGGING"] = "0"  # read when vLLM is imported: no handler of its own
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # read when torch is imported: no C++ notices
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID", "0")
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(run_dir / "logs" / f"libraries.rank{rank}.log")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.captureWarnings(True)
    for name in ("vllm", "py.warnings"):
        library = logging.getLogger(name)
        library.setLevel(logging.INFO)
        library.handlers[:] = [to_file]
        library.propagate = False


def main() -> int:
    run_dir = Path(sys.argv[1])
    configure_logging(run_dir)
    try:
        run_worker(run_dir)
    except LwzError as e:
        print(f"lwz: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
