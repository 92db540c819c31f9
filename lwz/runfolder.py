"""The run folder, the contract between stages: runs/<experiment>/<run>/{recipe.yaml, plan.txt, ...}."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from lwz import __version__, atomic
from lwz.errors import LwzError
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


def create_run_folder(recipe: Recipe, plan: Plan, folder: Path | None = None, resume: bool = False) -> Path:
    """Create the run folder with the resolved recipe and the plan; returns it.

    With `resume`, an existing folder (logging.run's, else the newest of the experiment) is reused
    as long as its recipe is the same.
    """
    folder = folder or (_resumable(recipe) if resume else run_folder(recipe))
    if (folder / "recipe.yaml").exists() and not resume:
        raise LwzError(str(folder), "logging.run", "the run folder exists; pass --resume to continue it "
                       "or choose another logging.run")
    check_same_recipe(recipe, folder)
    for sub in SUBFOLDERS:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    header = f"# resolved by {code_version()}\n"
    atomic.write_text(folder / "recipe.yaml", header + recipe_to_yaml(recipe))
    atomic.write_text(folder / "plan.txt", render_plan(recipe, plan))
    return folder


def check_same_recipe(recipe: Recipe, folder: Path) -> None:
    """An existing run folder in `folder` was made from this recipe (else an LwzError); no folder is fine."""
    if (folder / "recipe.yaml").exists() and _body(folder / "recipe.yaml") != recipe_to_yaml(recipe):
        raise LwzError(str(folder), "recipe.yaml", "differs from the recipe given; resume with "
                       f"`lwz run {folder}` to keep the run's own recipe")


def _body(recipe_file: Path) -> str:
    """A saved recipe without its 'resolved by' header."""
    return "".join(line for line in recipe_file.read_text().splitlines(keepends=True) if not line.startswith("# "))


def _resumable(recipe: Recipe) -> Path:
    if recipe.logging.run:
        return run_folder(recipe)
    experiment = Path(recipe.logging.output_dir) / recipe.name
    runs = sorted(p for p in experiment.glob("*") if (p / "recipe.yaml").exists()) if experiment.is_dir() else []
    if not runs:
        raise LwzError(str(experiment), "--resume", "no run folder to resume")
    return runs[-1]


# What a started run may change when it resumes (`lwz run RUN key=value`): how long it goes on and how it
# is kept, nothing that shapes the steps already taken.
RESUME_OVERRIDES = ("schedule.steps", "schedule.save_every", "schedule.eval_every", "schedule.keep_checkpoints")


def open_run(folder: Path, overrides: Sequence[str] = ()) -> tuple[Path, Recipe, Plan]:
    """A run folder's recipe and plan, to resume it; `overrides` of RESUME_OVERRIDES change them (the
    folder's recipe.yaml and plan.txt are rewritten once the new plan resolves)."""
    from lwz.plan.resolve import resolve
    from lwz.recipe.load import load_recipe

    if not (folder / "recipe.yaml").is_file():
        raise LwzError(str(folder), None, "not a run folder (no recipe.yaml)")
    for key in (o.split("=", 1)[0] for o in overrides):
        if key not in RESUME_OVERRIDES:
            raise LwzError(str(folder), key, "a started run keeps its recipe; when it resumes only "
                           f"{', '.join(RESUME_OVERRIDES)} may change")
    recipe = load_recipe(folder / "recipe.yaml", list(overrides))
    from lwz.actor.checkpoint import latest_checkpoint, step_of

    newest = latest_checkpoint(folder / "ckpt")
    done = step_of(newest) if newest is not None else 0
    if recipe.schedule.steps < done:
        raise LwzError(str(folder), "schedule.steps", f"{recipe.schedule.steps} is fewer than the {done} steps the "
                       "run has checkpointed")
    try:
        plan = resolve(recipe)
    except LwzError as e:
        raise LwzError(str(folder / "recipe.yaml"), e.key, e.message) from None
    if overrides:
        header = f"# resolved by {code_version()}; resumed with {' '.join(overrides)}\n"
        atomic.write_text(folder / "recipe.yaml", header + recipe_to_yaml(recipe))
        atomic.write_text(folder / "plan.txt", render_plan(recipe, plan))
    return folder, recipe, plan

