"""Pick the launcher a recipe asks for and start the run."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from lwz.errors import LwzError
from lwz.launch.local import launch_local
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe

log = logging.getLogger(__name__)
Tell = Callable[[str], None]  # where a command's messages for the user go


def launcher_for(recipe: Recipe) -> str:
    """'slurm' or 'local' (auto: SLURM for GPU recipes when sbatch is on PATH)."""
    choice = recipe.cluster.launcher
    if choice == "auto":
        return "slurm" if recipe.cluster.device == "gpu" and shutil.which("sbatch") else "local"
    return choice


def launch(recipe: Recipe, plan: Plan, folder: Path, tell: Tell = log.info) -> int:
    """Start the run; returns the exit code the CLI should give. What a user should read goes to `tell`
    (the CLI passes `print`)."""
    kind = launcher_for(recipe)
    if kind == "slurm":
        from lwz.launch.slurm import submit

        return submit(recipe, plan, folder, tell)
    if plan.nodes > 1:
        raise LwzError(None, "cluster.nodes", f"{plan.nodes} nodes need SLURM (cluster.launcher=slurm)")
    code = launch_local(folder, plan.world_size)
    tell(f"run folder: {folder}")
    if code:
        raise LwzError(str(folder / "logs"), None, f"a rank exited with code {code}; see the logs above and there")
    return 0
