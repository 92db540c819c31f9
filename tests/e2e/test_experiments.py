"""The shipped CPU experiment and demo on SmolLM2-135M-Instruct: every run of experiments/smollm2_length.yaml
plans, a 1-step version of its richest run (think template, all three rewards, chat template) trains for
real, and the README's demo recipe passes the checks `lwz run` makes before it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lwz.launch.sweep import expand, load_experiment
from lwz.models_local.smollm2 import smollm2_path

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "smollm2_length.yaml"


def lwz(*args: str, timeout: float = 900) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "lwz.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def test_every_run_of_the_experiment_plans():
    out = lwz("sweep", "--dry-run", str(EXPERIMENT))
    assert "smollm2_length: 4 run(s)" in out
    for name in ("length-template=nothink", "length-template=think", "no_length-template=nothink",
                 "no_length-template=think"):
        assert name in out


def test_every_run_of_the_ultralong_experiment_plans():
    """experiments/smollm2_ultralong.yaml (issue 33's runs, not in CI): sync and partial plan with 4,096-token
    responses on the long English prompts."""
    out = lwz("sweep", "--dry-run", str(ROOT / "experiments" / "smollm2_ultralong.yaml"))
    assert "smollm2_ultralong: 2 run(s)" in out and "sync" in out and "partial" in out, out


def test_a_step_of_the_experiments_think_run(tmp_path):
    """Its own overrides (`set:` + the variant's + the grid's), then smaller sizes for CI."""
    smollm2_path()
    experiment = load_experiment(EXPERIMENT)
    overrides = dict(expand(experiment))["length-template=think"]
    out = lwz("run", str(experiment.base), *experiment.fixed, *overrides, "schedule.steps=1", "schedule.save_every=0",
              "schedule.prompts_per_step=1", "rollout.max_tokens=24", "logging.wandb.mode=disabled",
              f"logging.output_dir={tmp_path}", "logging.run=think")
    folder = tmp_path / "smollm2_cpu" / "think"
    assert f"run folder: {folder}" in out
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
    assert {"reward/length", "reward/format", "reward/writing_rm", "length/response_mean"} <= set(rows[0])
    assert rows[0]["rollout/logprob_diff"] < 1e-3   # top-p 1: the actor's distribution is the engine's
    assert (folder / "plots" / "rewards.png").is_file() and (folder / "ckpt" / "step-00000001").is_dir()
    sample = json.loads((folder / "samples" / "step_000001.jsonl").read_text().splitlines()[0])
    assert sample["response"].strip(), sample
    for noise in ("Loading safetensors", "NUMA binding", "INFO"):   # vLLM's lines go to RUN/logs/
        assert noise not in out, noise


def test_the_demo_recipe_passes_the_pre_run_checks(tmp_path):
    smollm2_path()
    out = lwz("run", "recipes/demo.yaml", "--dry-run", f"logging.output_dir={tmp_path}")
    assert "nothing started" in out
    (plan,) = (tmp_path / "demo").glob("*/plan.txt")
    assert "length (1)" in plan.read_text() and "template raw in the chat template" in plan.read_text()
    assert not list((tmp_path / "demo").glob("*/metrics.jsonl"))
