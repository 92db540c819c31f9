"""The run folder, the contract between stages: runs/<experiment>/<run>/{recipe.yaml, plan.txt, ...}."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from lwz import __version__, atomic
from lwz.plan.render import render_plan
from lwz.plan.resolve import Plan
from lwz.recipe.load import recipe_to_yaml
from lwz.recipe.schema import Recipe

SUBFOLDERS = ("samples", "plots", "ckpt", "slurm")


def run_folder(recipe: Recipe) -> Path:
    """OUTPUT_DIR/<name>/<run>; the run name defaults to a timestamp."""
    run = recipe.logging.run or time.strftime("%Y%m%d-%H%M%S")
    return Path(recipe.logging.output_dir) / recipe.name / run


def code_version() -> str:
    """lwz's version and, inside a git checkout, the commit (with '+dirty' for local changes)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty=+dirty"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return f"lwz {__version__} ({commit})"


def create_run_folder(recipe: Recipe, plan: Plan, folder: Path | None = None) -> Path:
    """Create the run folder with the resolved recipe and the plan; returns it."""
    folder = folder or run_folder(recipe)
    for sub in SUBFOLDERS:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    header = f"# resolved by {code_version()}\n"
    atomic.write_text(folder / "recipe.yaml", header + recipe_to_yaml(recipe))
    atomic.write_text(folder / "plan.txt", render_plan(recipe, plan))
    return folder
