"""Pipelines (`lwz pipeline`): the paper's three stages planned with their handoffs, errors before anything
is written, the tiny pipeline end to end (pretrain -> reward model -> RL on both); the SLURM chain:
tests/slurm/test_pipeline_on_slurm.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from helpers import lwz

from lwz.cli import main
from lwz.launch.pipeline import check_handoffs, plan_pipeline

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "experiments" / "longwriter_zero_pipeline.yaml"
TINY = ROOT / "experiments" / "longwriter_zero_tiny.yaml"


def test_the_papers_pipeline_hands_the_pretrained_model_and_the_reward_model_to_rl(monkeypatch, tmp_path):
    monkeypatch.delenv("LWZ_MODELS", raising=False)
    name, stages = plan_pipeline(PAPER, [f"logging.output_dir={tmp_path}"])
    check_handoffs(PAPER, stages)
    assert name == "longwriter_zero_pipeline"
    assert [(s.name, s.recipe.stage, s.plan.world_size) for s in stages] == [
        ("cpt", "pretrain", 64), ("rm", "reward_model", 64), ("rl", "grpo", 64)]
    cpt, rm, rl = stages
    assert cpt.recipe.model.path == "/models/Qwen2.5-32B" and cpt.folder == tmp_path / name / "cpt"
    assert rl.recipe.model.path == str(tmp_path / name / "cpt" / "model")
    assert rl.recipe.rewards.terms[1].params["model"] == str(tmp_path / name / "rm" / "reward_model")
    assert rl.inputs == {"model.path": "cpt", "rewards.terms.1.params.model": "rm"}
    assert not (tmp_path / name).exists()


def test_overrides_reach_every_stage_or_the_one_named():
    _, stages = plan_pipeline(TINY, ["schedule.seed=7", "rm:schedule.steps=3"])
    assert [s.recipe.schedule.seed for s in stages] == [7, 7, 7]
    assert [s.recipe.schedule.steps for s in stages] == [30, 3, 10]


@pytest.mark.parametrize("body, args, fragment", [
    ("stages: [{name: rl, recipe: ../recipes/tiny.yaml, inputs: {model.path: cpt}}]", [],
     "stages.0.inputs.model.path: 'cpt' is not an earlier stage (this is the first stage)"),
    ("stages: [{name: a, recipe: ../recipes/tiny.yaml}, {name: b, recipe: ../recipes/tiny.yaml, "
     "inputs: {model.path: a}}]", [], "stage 'a' (stage grpo) writes no model folder to hand on"),
    ("stages: [{name: a, recipe: ../recipes/nope.yaml}]", [], "stages.0.recipe: '../recipes/nope.yaml': recipe not found"),
    ("stages: [{name: a, recipe: ../recipes/tiny.yaml, after: [b]}]", [], "stages.0.after: unknown key"),
    ("stages: [{name: a, recipe: ../recipes/tiny.yaml}]", ["b:schedule.steps=2"], "b:schedule.steps: 'b' is not a stage"),
    (None, ["rl:model.arch.num_layers=4"], "rl:model.path: stage 'cpt' trains num_layers 2, stage 'rl' says 4"),
    (None, ["rm:rm.pairs=[missing.jsonl]"], "stage 'rm' is invalid"),
])
def test_a_bad_pipeline_is_one_line_and_writes_nothing(body, args, fragment, tmp_path, capsys):
    path = TINY
    if body is not None:
        path = ROOT / "experiments" / f".test_pipeline_{os.getpid()}.yaml"
        path.write_text(body + "\n")
    try:
        code = main(["pipeline", "--dry-run", str(path), f"logging.output_dir={tmp_path / 'runs'}", *args])
    finally:
        if body is not None:
            path.unlink()
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "runs").exists()


def test_a_rerun_with_a_changed_stage_stops_before_anything_runs(tmp_path, capsys):
    from lwz.runfolder import create_run_folder

    args = [f"logging.output_dir={tmp_path}", "logging.wandb.mode=disabled"]
    _, stages = plan_pipeline(TINY, [*args, "rl:schedule.steps=3"])
    create_run_folder(stages[2].recipe, stages[2].plan, folder=stages[2].folder)
    assert main(["pipeline", str(TINY), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lwz: error: {stages[2].folder}: recipe.yaml: stage 'rl': differs from the recipe given; resume " \
                  f"with `lwz run {stages[2].folder}` to keep the run's own recipe"
    assert sorted(p.name for p in (tmp_path / "longwriter_zero_tiny").iterdir()) == ["rl"]


@pytest.mark.slow
def test_the_tiny_pipeline_pretrains_trains_a_reward_model_and_runs_rl_on_both(tmp_path):
    runs = tmp_path / "runs"
    args = [TINY, f"logging.output_dir={runs}", "logging.wandb.mode=disabled", "schedule.save_every=0",
            "cpt:schedule.steps=12", "cpt:schedule.eval_every=6", "cpt:cpt.tokens_per_step=256", "cpt:cpt.eval_rows=2",
            f"cpt:cpt.cache={tmp_path / 'tokens'}", "rl:schedule.steps=2", "rl:rollout.max_tokens=16"]
    proc = lwz("pipeline", *args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = runs / "longwriter_zero_tiny"
    assert re.findall(r"stage (\w+) \(", proc.stdout) == ["cpt", "rm", "rl"]

    held = [row["eval/loss"] for row in map(json.loads, (out / "cpt" / "metrics.jsonl").read_text().splitlines())
            if "eval/loss" in row]
    accuracy = json.loads((out / "rm" / "reward_model" / "metrics.json").read_text())["eval/accuracy"]
    rm_rows = [json.loads(line) for line in (out / "rm" / "metrics.jsonl").read_text().splitlines()]
    print(f"\npretraining held-out loss at steps 0, 6, 12: {held}; reward model held-out accuracy {accuracy}")
    assert len(held) == 3 and held[0] > held[1] > held[2]
    assert accuracy >= 0.9  # the tiny reward-model recipe as shipped (60 steps)
    assert rm_rows[-1]["step"] == 60 and rm_rows[-1]["loss"] < rm_rows[1]["loss"]
    config = json.loads((out / "rm" / "reward_model" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"]

    rl = out / "rl"
    recipe = (rl / "recipe.yaml").read_text()
    assert f"path: {out / 'cpt' / 'model'}" in recipe and f"model: {out / 'rm' / 'reward_model'}" in recipe
    steps = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and all("reward/writing_rm" in s for s in steps)

    again = lwz("pipeline", "--dry-run", *args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(done)") == 2  # a rerun skips the two finished stages
