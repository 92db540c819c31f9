"""Sweeps: experiment files expand into named, validated runs; one job array runs them all."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lwz.errors import LwzError
from lwz.launch.sweep import check_same_resources, expand, load_experiment, plan_sweep

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny.yaml"


def write_experiment(tmp_path: Path, **body) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"base": str(TINY), **body}, sort_keys=False))
    return path


def lwz(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lwz.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_variants_cross_the_grid_with_names_and_overrides(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(
        tmp_path, name="abl", set=["schedule.steps=3"],
        grid={"rollout.group_size": [4, 8], "rewards.combine": ["mean_of_normalized", "weighted_sum"]},
        variants={"base": [], "nothink": ["rollout.template=nothink"]}))
    runs = expand(experiment)

    assert len(runs) == 8
    assert runs[0] == ("base-group_size=4-combine=mean_of_normalized",
                       ["rollout.group_size=4", "rewards.combine=mean_of_normalized"])
    assert runs[-1] == ("nothink-group_size=8-combine=weighted_sum",
                        ["rollout.template=nothink", "rollout.group_size=8", "rewards.combine=weighted_sum"])
    assert len({name for name, _ in runs}) == 8
    planned = plan_sweep(experiment, ["logging.output_dir=/tmp/sweep-test"])
    last = planned[-1].recipe
    assert (last.name, last.logging.run, last.schedule.steps) == ("abl", runs[-1][0], 3)
    assert (last.rollout.template, last.rollout.group_size, last.rewards.combine) == ("nothink", 8, "weighted_sum")
    assert planned[0].recipe.rollout.template == "think"


def test_names_are_filesystem_safe_unique_and_labels_disambiguated(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(
        tmp_path, grid={"rewards.terms.0.weight": [0, 1], "rewards.terms.1.weight": [1],
                        "data.prompts": [["a b/c.jsonl"], ["a b c.jsonl"]]}))
    names = [name for name, _ in expand(experiment)]

    assert names[0] == "0.weight=0-1.weight=1-prompts=_a_b_c.jsonl"
    assert names[1] == "0.weight=0-1.weight=1-prompts=_a_b_c.jsonl-2"  # same after sanitising
    assert all(re.fullmatch(r"[A-Za-z0-9._=+-]+", n) for n in names) and len(set(names)) == 4


def test_no_grid_and_no_variants_is_one_run(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, set=["schedule.steps=2"]))
    assert expand(experiment) == [("base", [])]
    assert experiment.name == "exp"


def test_an_invalid_run_stops_the_sweep_with_its_name(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(
        tmp_path, grid={"rollout.group_size": [4, 1]}, variants={"ok": [], "typo": ["rollout.grup_size=3"]}))
    with pytest.raises(LwzError, match=r"run 'ok-group_size=1' is invalid: .*rollout.group_size: 1 is out of range"):
        plan_sweep(experiment)

    out = lwz("sweep", str(experiment.path), f"logging.output_dir={tmp_path / 'runs'}")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "run 'ok-group_size=1' is invalid" in out.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written before every run is valid"


def test_experiment_file_errors_name_the_key(tmp_path: Path) -> None:
    for body, key in (({"grid": {"rollout.group_size": []}}, "grid"), ({"sett": []}, "sett"),
                      ({"set": ["schedule.steps"]}, "set"), ({"array_parallelism": 0}, "array_parallelism")):
        with pytest.raises(LwzError, match=f": {re.escape(key)}: "):
            load_experiment(write_experiment(tmp_path, **body))


def test_runs_of_one_array_must_share_resources(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, grid={"cluster.gpus_per_node": [1, 2]},
                                                  set=["actor.tp=1"]))
    runs = plan_sweep(experiment)
    with pytest.raises(LwzError, match=r"cluster \(ntasks_per_node\): runs 'gpus_per_node=1' and 'gpus_per_node=2' differ"):
        check_same_resources(experiment, runs)


def test_dry_run_lists_every_paper_ablation_with_its_plan(tmp_path: Path, paper_models: Path) -> None:
    out = lwz("sweep", "--dry-run", "experiments/longwriter_zero_ablations.yaml",
              f"logging.output_dir={tmp_path / 'runs'}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("longwriter_zero_ablations: 12 run(s) of recipes/longwriter_zero.yaml")
    runs = [line.strip() for line in lines[1:]]
    assert len(runs) == 12
    variants = ("baseline", "nothink", "no_length", "no_writing_rm", "no_format", "weighted_sum")
    assert [r.split(":")[0] for r in runs] == [f"{v}-group_size={g}" for v in variants for g in (16, 32)]
    assert all("64 ranks (8x8 gpu), tp 8 pp 2 dp 4; engines rollout 16x tp4; peak" in r
               for r in runs)
    assert "rewards.terms.1.weight=0 rollout.group_size=16" in runs[6]
    assert not (tmp_path / "runs").exists()
