"""Pipelines: stages that hand models on, run in order (locally) or as SLURM jobs with dependencies.

A pipeline file (paths relative to it):
    name: longwriter_zero_pipeline            # optional; default: the file's stem
    stages:
      - {name: cpt, recipe: ../recipes/cpt_qwen25_32b.yaml}
      - {name: rm, recipe: ../recipes/writing_rm_72b.yaml, set: [schedule.steps=2000]}
      - name: rl
        recipe: ../recipes/longwriter_zero.yaml
        inputs: {model.path: cpt, rewards.terms.1.params.model: rm}

Each stage is a recipe run in OUTPUT_DIR/<pipeline name>/<stage name>/. `inputs` sets a recipe key to the
model folder an earlier stage writes (a `pretrain` stage's RUN/model, a `reward_model` stage's
RUN/reward_model), so the key is known before anything runs. Overrides on the command line apply to every
stage (`key=value`) or to one (`STAGE:key=value`), after the file's `set:`. Every stage is loaded,
planned and checked before anything is written or submitted; a key fed by an earlier stage is checked
against that stage's recipe (its architecture) instead of the disk. Locally the stages run one after the
other, a stage whose model folder is complete is skipped and an unfinished one resumes from its
checkpoint; on SLURM every stage is one job, started when the jobs it takes inputs from end well
(`--dependency=afterok`), and OUTPUT_DIR/<pipeline name>/pipeline.json records the jobs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from lwz import atomic
from lwz.errors import LwzError, did_you_mean
from lwz.plan.resolve import Plan, resolve
from lwz.recipe.load import load_recipe
from lwz.recipe.schema import ArchCfg, Recipe
from lwz.runfolder import run_folder

log = logging.getLogger(__name__)

__all__ = ["Stage", "load_pipeline", "plan_pipeline", "check_handoffs", "check_pipeline_inputs", "run_pipeline", "describe_stage",
           "STAGE_OUTPUTS", "MANIFEST_FILE"]

PIPELINE_KEYS = ("name", "stages")
STAGE_KEYS = ("name", "recipe", "set", "inputs")
MANIFEST_FILE = "pipeline.json"
# the model folder a stage of each kind leaves in its run folder, and the file that says it is complete
STAGE_OUTPUTS = {"pretrain": ("model", "lwz_pretrain.json"), "reward_model": ("reward_model", "lwz_rm.json")}


@dataclass(frozen=True)
class Stage:
    """One stage: its recipe with every override applied, its plan, and the stages it takes inputs from."""

    name: str
    recipe: Recipe
    plan: Plan
    inputs: dict[str, str]

    @property
    def folder(self) -> Path:
        return run_folder(self.recipe).resolve()

    @property
    def output(self) -> Path | None:
        """The model folder this stage hands on (None for a stage of kind grpo)."""
        out = STAGE_OUTPUTS.get(self.recipe.stage)
        return self.folder / out[0] if out else None

    def done(self) -> bool:
        out = STAGE_OUTPUTS.get(self.recipe.stage)
        return out is not None and (self.folder / out[0] / out[1]).is_file()


def _read(path: Path) -> dict:
    where = str(path)
    if not path.is_file():
        raise LwzError(where, None, "pipeline file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LwzError(where, None, f"invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise LwzError(where, None, f"a pipeline is a mapping with keys {', '.join(PIPELINE_KEYS)}")
    for key in data:
        if key not in PIPELINE_KEYS:
            raise LwzError(where, str(key), f"unknown key (allowed: {', '.join(PIPELINE_KEYS)})"
                           + did_you_mean(str(key), PIPELINE_KEYS))
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise LwzError(where, "stages", "must be a non-empty list of {name, recipe, set, inputs}")
    return data


def load_pipeline(path: str | Path) -> tuple[str, list[dict]]:
    """The pipeline's name and its stages as written (checked: names, recipes, inputs from earlier stages)."""
    path = Path(path)
    data = _read(path)
    where, seen, stages = str(path), [], []
    for i, raw in enumerate(data["stages"]):
        key = f"stages.{i}"
        if not isinstance(raw, dict):
            raise LwzError(where, key, "must be a mapping with keys " + ", ".join(STAGE_KEYS))
        for field in raw:
            if field not in STAGE_KEYS:
                raise LwzError(where, f"{key}.{field}", f"unknown key (allowed: {', '.join(STAGE_KEYS)})"
                               + did_you_mean(str(field), STAGE_KEYS))
        name = raw.get("name")
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or name in seen:
            raise LwzError(where, f"{key}.name", f"{name!r}: a stage needs a unique name of letters, digits, - and _")
        recipe = raw.get("recipe")
        if not isinstance(recipe, str) or not (path.parent / recipe).is_file():
            raise LwzError(where, f"{key}.recipe", f"{recipe!r}: recipe not found (relative to the pipeline file)")
        overrides = raw.get("set") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise LwzError(where, f"{key}.set", "must be a list of key=value overrides")
        inputs = raw.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise LwzError(where, f"{key}.inputs", "must map recipe keys to names of earlier stages")
        for target, source in inputs.items():
            if source not in seen:
                raise LwzError(where, f"{key}.inputs.{target}", f"{source!r} is not an earlier stage"
                               + (f" (earlier: {', '.join(seen)})" if seen else " (this is the first stage)"))
        seen.append(name)
        stages.append({"name": name, "recipe": Path(os.path.normpath(path.parent / recipe)),
                       "set": list(overrides), "inputs": {str(k): str(v) for k, v in inputs.items()}})
    return str(data.get("name") or path.stem), stages


def _split_overrides(cli: Sequence[str], names: Sequence[str], where: str) -> dict[str | None, list[str]]:
    """Command-line overrides by stage (None: every stage)."""
    by_stage: dict[str | None, list[str]] = {None: []}
    for item in cli:
        key, _, _ = item.partition("=")
        stage, colon, rest = key.partition(":")
        if not colon:
            by_stage[None].append(item)
            continue
        if stage not in names:
            raise LwzError(where, key, f"{stage!r} is not a stage (stages: {', '.join(names)})")
        by_stage.setdefault(stage, []).append(item[len(stage) + 1:])
    return by_stage


def plan_pipeline(path: str | Path, cli_overrides: Sequence[str] = ()) -> tuple[str, list[Stage]]:
    """Load and plan every stage; a stage's inputs become overrides naming the earlier stages' model folders."""
    name, raw = load_pipeline(path)
    where = str(path)
    by_stage = _split_overrides(cli_overrides, [r["name"] for r in raw], where)
    stages: dict[str, Stage] = {}
    for i, item in enumerate(raw):
        fed = []
        for target, source in item["inputs"].items():
            producer = stages[source]
            if producer.output is None:
                raise LwzError(where, f"stages.{i}.inputs.{target}", f"stage {source!r} (stage {producer.recipe.stage}) "
                               "writes no model folder to hand on (pretrain and reward_model stages do)")
            fed.append(f"{target}={producer.output}")
        overrides = [*item["set"], *by_stage[None], *by_stage.get(item["name"], []), *fed,
                     f"name={name}", f"logging.run={item['name']}"]
        try:
            recipe = load_recipe(item["recipe"], overrides)
            plan = resolve(recipe)
        except LwzError as e:
            raise LwzError(where, f"stages.{i}", f"stage {item['name']!r} is invalid: {e}") from None
        stages[item["name"]] = Stage(item["name"], recipe, plan, item["inputs"])
    return name, list(stages.values())


def _arch_at(recipe: Recipe, key: str) -> ArchCfg | None:
    """The architecture the recipe states for the model named at `key` (model.path or a writing RM's)."""
    if key == "model.path":
        return recipe.model.arch
    for i, term in enumerate(recipe.rewards.terms):
        if key == f"rewards.terms.{i}.params.model":
            return ArchCfg(**term.params["arch"]) if term.params.get("arch") else None
    return None


def check_handoffs(path: str | Path, stages: list[Stage]) -> None:
    """Each key fed by an earlier stage states (where it states one) the architecture that stage trains."""
    by_name = {stage.name: stage for stage in stages}
    for stage in stages:
        for target, source in stage.inputs.items():
            said, made = _arch_at(stage.recipe, target), by_name[source].recipe.model.arch
            for field in ArchCfg.__dataclass_fields__:
                a, b = getattr(said, field, None), getattr(made, field, None)
                if a is not None and b is not None and a != b:
                    raise LwzError(str(path), f"{stage.name}:{target}", f"stage {source!r} trains {field} {b!r}, "
                                   f"stage {stage.name!r} says {a!r}")


def check_pipeline_inputs(path: str | Path, stages: list[Stage]) -> None:
    """Every stage's files, before anything is written or submitted; keys fed by an earlier stage are not
    looked for on disk (check_handoffs checks them against that stage's recipe)."""
    from lwz.launch.preflight import check_inputs

    check_handoffs(path, stages)
    for stage in stages:
        try:
            check_inputs(stage.recipe, produced=frozenset(stage.inputs))
        except LwzError as e:
            raise LwzError(str(path), None, f"stage {stage.name!r} is invalid: {e}") from None


def describe_stage(stage: Stage) -> str:
    """One line of `lwz pipeline --dry-run`."""
    p = stage.plan
    fed = ", ".join(f"{key} <- {source}" for key, source in stage.inputs.items()) or "no inputs"
    out = f"; hands on {stage.output}" + (" (done)" if stage.done() else "") if stage.output else ""
    return (f"{stage.name} ({stage.recipe.stage}): {p.world_size} ranks ({p.nodes}x{p.gpus_per_node} {p.device}), "
            f"tp {p.tp} pp {p.pp} dp {p.dp}, {stage.recipe.schedule.steps} steps; {fed}{out}")


def run_pipeline(name: str, stages: list[Stage], tell: Callable[[str], None] = log.info) -> int:
    """Create (or reopen) every stage's run folder and run the stages: one after the other here, or as SLURM
    jobs chained by their inputs; returns the CLI's exit code. Progress goes to `tell` (the CLI: print)."""
    from lwz.models_local.assets import build_recipe_assets
    from lwz.launch.choose import launch, launcher_for
    from lwz.runfolder import check_same_recipe, create_run_folder

    if len({launcher_for(stage.recipe) for stage in stages}) > 1:
        raise LwzError(None, "cluster.launcher", "the stages of a pipeline must all run locally or all on SLURM")
    for stage in stages:  # a rerun continues the stages' folders: each must still hold the same recipe
        try:
            check_same_recipe(stage.recipe, stage.folder)
        except LwzError as e:
            raise LwzError(e.where, e.key, f"stage {stage.name!r}: {e.message}") from None
    for stage in stages:
        build_recipe_assets(stage.recipe)
    folders = {stage.name: create_run_folder(stage.recipe, stage.plan, folder=stage.folder, resume=True)
               for stage in stages}
    if launcher_for(stages[0].recipe) == "slurm":
        return _submit_chain(name, stages, folders, tell)
    for stage in stages:
        if stage.done():
            tell(f"stage {stage.name}: done ({stage.output} is complete)")
            continue
        tell(f"stage {stage.name} ({stage.recipe.stage}): {folders[stage.name]}")
        launch(stage.recipe, stage.plan, folders[stage.name], tell)
    return 0


def _submit_chain(name: str, stages: list[Stage], folders: dict[str, Path], tell: Callable[[str], None]) -> int:
    from lwz.launch.slurm import submit_job

    jobs: dict[str, str] = {}
    for stage in stages:
        if stage.done():
            tell(f"stage {stage.name}: done ({stage.output} is complete)")
            continue
        after = [jobs[source] for source in stage.inputs.values() if source in jobs]
        jobs[stage.name] = submit_job(stage.recipe, stage.plan, folders[stage.name], after=after)
        wait = f" after job(s) {', '.join(after)}" if after else ""
        tell(f"stage {stage.name}: submitted job {jobs[stage.name]}{wait}; run folder {folders[stage.name]}")
    out = next(iter(folders.values())).parent
    record = {"name": name, "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "stages": [{"name": s.name, "stage": s.recipe.stage, "folder": str(folders[s.name]),
                          "job_id": jobs.get(s.name), "inputs": s.inputs} for s in stages]}
    atomic.write_text(out / MANIFEST_FILE, json.dumps(record, indent=1) + "\n")
    tell(f"manifest: {out / MANIFEST_FILE}")
    return 0
