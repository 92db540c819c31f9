"""Sweeps: an experiment file -> named runs -> one SLURM job array.

An experiment file (paths relative to it):
    base: ../recipes/longwriter_zero.yaml     # the recipe every run starts from
    name: ablations                           # optional; default: the file's stem
    set: [schedule.steps=50]                  # overrides of every run
    grid: {rollout.group_size: [16, 32]}      # cartesian product of these values
    variants: {nothink: [rollout.template=nothink], baseline: []}   # each crossed with the grid
    array_parallelism: 4                      # optional; default: all runs at once

Overrides apply in the order set, variant, grid, command line; then `name` becomes the experiment
name and `logging.run` the run name, so runs go to OUTPUT_DIR/<experiment>/<run>/. Every run is
loaded and planned before anything is written or submitted.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lwz import atomic
from lwz.errors import LwzError, did_you_mean
from lwz.launch.requeue import SlurmRunWorker
from lwz.launch.slurm import make_executor, slurm_parameters, write_job_record
from lwz.plan.memory import GIB
from lwz.plan.resolve import Plan, resolve
from lwz.recipe.load import load_recipe
from lwz.recipe.schema import Recipe
from lwz.runfolder import create_run_folder, run_folder

MANIFEST_FILE = "sweep.json"
EXPERIMENT_KEYS = ("base", "name", "set", "grid", "variants", "array_parallelism")


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file; `variants` is {"": []} when the file has none."""

    path: Path
    base: Path
    name: str
    fixed: list[str]
    grid: dict[str, list[Any]]
    variants: dict[str, list[str]]
    array_parallelism: int | None


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its name, its own overrides (variant and grid), recipe and plan."""

    name: str
    overrides: list[str]
    recipe: Recipe
    plan: Plan


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise LwzError(where, None, "experiment file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LwzError(where, None, f"invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise LwzError(where, None, f"an experiment is a mapping with keys {', '.join(EXPERIMENT_KEYS)}")
    for key in data:
        if key not in EXPERIMENT_KEYS:
            raise LwzError(where, str(key), f"unknown key (allowed: {', '.join(EXPERIMENT_KEYS)})"
                           + did_you_mean(str(key), EXPERIMENT_KEYS))
    if not isinstance(data.get("base"), str):
        raise LwzError(where, "base", "must be the path of a recipe (relative to the experiment file)")
    base = Path(os.path.normpath(path.parent / data["base"]))
    if not base.is_file():
        raise LwzError(where, "base", f"recipe {base} not found")
    fixed = _override_list(data.get("set") or [], where, "set")
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise LwzError(where, "grid", "must map each key to a non-empty list of values")
    variants = data.get("variants")
    if variants is None:
        variants = {"": []}
    elif not isinstance(variants, dict) or not variants:
        raise LwzError(where, "variants", "must map variant names to lists of key=value overrides")
    variants = {str(name): _override_list(items or [], where, f"variants.{name}") for name, items in variants.items()}
    parallelism = data.get("array_parallelism")
    if parallelism is not None and (not isinstance(parallelism, int) or parallelism < 1):
        raise LwzError(where, "array_parallelism", f"{parallelism!r} must be an integer >= 1")
    return Experiment(path=path, base=base, name=str(data.get("name") or path.stem), fixed=fixed,
                      grid={str(k): v for k, v in grid.items()}, variants=variants, array_parallelism=parallelism)


def expand(experiment: Experiment) -> list[tuple[str, list[str]]]:
    """(run name, its own overrides: variant's then grid's) for every variant x grid point.

    Names are filesystem-safe and unique; the experiment's `set:` overrides are not repeated here.
    """
    labels = _short_labels(list(experiment.grid))
    runs: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for variant, variant_overrides in experiment.variants.items():
        for values in itertools.product(*experiment.grid.values()):
            parts = [variant] if variant else []
            parts += [f"{labels[key]}={_text(value)}" for key, value in zip(experiment.grid, values)]
            name = _unique(_safe_name("-".join(parts)) or "base", seen)
            grid_overrides = [f"{key}={_text(value)}" for key, value in zip(experiment.grid, values)]
            runs.append((name, [*variant_overrides, *grid_overrides]))
    return runs


def plan_sweep(experiment: Experiment, cli_overrides: Sequence[str] = ()) -> list[SweepRun]:
    """Load and plan every run; the first invalid run stops the sweep with its name and error."""
    for item in cli_overrides:
        key = item.partition("=")[0].strip()
        if key in experiment.grid:
            raise LwzError("command line", key, "is swept by the experiment's grid; it cannot also be set here")
    runs = []
    for name, overrides in expand(experiment):
        full = [*experiment.fixed, *overrides, *cli_overrides, f"name={experiment.name}", f"logging.run={name}"]
        try:
            recipe = load_recipe(experiment.base, full)
            plan = resolve(recipe)
        except LwzError as e:
            raise LwzError(str(experiment.path), None, f"run '{name}' is invalid: {e}") from None
        runs.append(SweepRun(name, overrides, recipe, plan))
    return runs


def check_sweep_inputs(experiment: Experiment, runs: list[SweepRun]) -> None:
    """Every run's files (prompts, models, output folder), before anything is written or submitted."""
    from lwz.launch.preflight import check_inputs

    for run in runs:
        try:
            check_inputs(run.recipe)
        except LwzError as e:
            raise LwzError(str(experiment.path), None, f"run '{run.name}' is invalid: {e}") from None


def check_same_resources(experiment: Experiment, runs: list[SweepRun]) -> dict[str, Any]:
    """The SLURM options all runs share; an error names the first option two runs disagree on."""
    first = slurm_parameters(runs[0].recipe, runs[0].plan, experiment.name)
    for run in runs[1:]:
        params = slurm_parameters(run.recipe, run.plan, experiment.name)
        for key in sorted(set(first) | set(params)):
            if first.get(key) != params.get(key):
                raise LwzError(str(experiment.path), f"cluster ({key})", f"runs '{runs[0].name}' and '{run.name}' "
                               f"differ ({first.get(key)!r} vs {params.get(key)!r}); one job array needs the same "
                               "resources for every run: split the sweep into several experiment files")
    return first


def describe(run: SweepRun) -> str:
    """One line of `lwz sweep --dry-run`: the run, its plan in brief and its overrides."""
    p = run.plan
    engines = ", ".join(f"{e.name} {e.count}x tp{e.tp}" for e in p.engines if e.ranks)
    peak = max(p.phase_peak.values(), default=0) / GIB
    return (f"{run.name}: {p.world_size} ranks ({p.nodes}x{p.gpus_per_node} {p.device}), tp {p.tp} pp {p.pp} "
            f"dp {p.dp}; engines {engines}; peak {peak:.1f} GiB; {' '.join(run.overrides) or '(no own overrides)'}")


def experiment_output_dir(experiment: Experiment, cli_overrides: Sequence[str] = ()) -> Path:
    """OUTPUT_DIR/<experiment name>, where the runs, sweep.json and the SLURM files go."""
    recipe = load_recipe(experiment.base, [*experiment.fixed, *cli_overrides, f"name={experiment.name}"])
    return Path(recipe.logging.output_dir).resolve() / experiment.name


def submit_sweep(experiment: Experiment, runs: list[SweepRun], cli_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Create every run folder and submit one job array; writes and returns the manifest."""
    params = check_same_resources(experiment, runs)
    folders = [run_folder(run.recipe).resolve() for run in runs]
    for run, folder in zip(runs, folders):
        if folder.exists():
            raise LwzError(str(folder), "logging.run", f"run '{run.name}' already has a folder; remove it or "
                           "change the experiment's name")
    out = folders[0].parent
    if any(folder.parent != out for folder in folders):
        raise LwzError(str(experiment.path), "logging.output_dir", "all runs of a sweep must share one output folder")
    for run, folder in zip(runs, folders):
        create_run_folder(run.recipe, run.plan, folder=folder)
    params["array_parallelism"] = experiment.array_parallelism or len(runs)
    cluster = runs[0].recipe.cluster
    executor = make_executor(out / "slurm", params, cluster.max_requeues, cluster.container)
    with executor.batch():
        jobs = [executor.submit(SlurmRunWorker(folder, run.recipe.cluster.max_requeues))
                for run, folder in zip(runs, folders)]
    for run, folder, job in zip(runs, folders, jobs):
        write_job_record(folder, job.job_id, out / "slurm", run.plan.world_size)
    manifest = {"experiment": str(experiment.path.resolve()), "name": experiment.name,
                "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "array_job_id": str(jobs[0].job_id).split("_")[0], "submitit_folder": str(out / "slurm"),
                "base": str(experiment.base.resolve()), "set": experiment.fixed, "command_line": list(cli_overrides),
                "runs": [{"name": run.name, "folder": str(folder), "job_id": str(job.job_id),
                          "overrides": run.overrides} for run, folder, job in zip(runs, folders, jobs)]}
    atomic.write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The sweep manifest in an experiment folder, if there is one."""
    path = Path(folder) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _override_list(items: Any, where: str, key: str) -> list[str]:
    if not isinstance(items, list) or any(not isinstance(i, str) or "=" not in i for i in items):
        raise LwzError(where, key, "must be a list of key=value overrides (e.g. [schedule.steps=50])")
    return list(items)


def _text(value: Any) -> str:
    """A grid value as override text (strings as they are, everything else as JSON/YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


def _short_labels(keys: list[str]) -> dict[str, str]:
    """Each key's shortest dotted suffix that no other key shares: rollout.group_size -> group_size."""
    labels = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if not any(other != key and (other == label or other.endswith("." + label)) for other in keys):
                break
        labels[key] = label
    return labels


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("._")


def _unique(name: str, seen: set[str]) -> str:
    candidate, n = name, 2
    while candidate in seen:
        candidate, n = f"{name}-{n}", n + 1
    seen.add(candidate)
    return candidate
