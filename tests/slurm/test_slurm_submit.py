"""SLURM submission: sbatch options from the recipe (golden script), and real jobs on the test cluster.

The golden script is regenerated with LWZ_UPDATE_GOLDEN=1 (review the diff). The slow tests submit
real jobs: status/logs/cancel, a failing run that is not requeued, and end-to-end training runs of
recipes/tiny.yaml (two tasks with actor.tp=2, and a requeue that resumes from the checkpoint).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fixtures_slurm import SlurmCluster
from helpers import logged_steps, lwz, wait_for_state, wait_until_done

from lwz.commands.runs import ACTIVE_STATES, job_state
from lwz.errors import LwzError
from lwz.launch.requeue import read_requeues
from lwz.launch.slurm import read_job_record, render_sbatch, submit, time_to_minutes
from lwz.plan.resolve import resolve
from lwz.recipe.load import load_recipe
from lwz.runfolder import create_run_folder

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "longwriter_zero.sbatch"
PROFILE = ROOT / "slurm" / "profiles" / "example_gpu_cluster.yaml"


def normalised(script: str, folder: Path) -> str:
    """The script without this machine's paths: RUN_DIR for the run folder, PYTHON for the interpreter."""
    return script.replace(str(folder.resolve()), "RUN_DIR").replace(sys.executable, "PYTHON")


def _paper_recipe_with(tmp_path: Path, cluster: dict) -> Path:
    """A recipe inheriting recipes/longwriter_zero.yaml with `cluster` keys on top."""
    path = tmp_path / "paper_on_my_cluster.yaml"
    path.write_text(yaml.safe_dump({"base": str(ROOT / "recipes" / "longwriter_zero.yaml"), "cluster": cluster}))
    return path


def test_time_limits_become_minutes() -> None:
    assert time_to_minutes("48:00:00") == 2880
    assert time_to_minutes("2-00:30:00") == 2910
    assert time_to_minutes("00:10:01") == 11  # seconds round up
    assert time_to_minutes("90") == 90
    for bad in ("1:2", "48h", "00:61:00"):
        with pytest.raises(LwzError, match="cluster.time"):
            time_to_minutes(bad)


@pytest.mark.slurm
def test_paper_recipe_sbatch_matches_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LWZ_MODELS", raising=False)
    recipe = load_recipe(ROOT / "recipes" / "longwriter_zero.yaml")
    folder = tmp_path / "runs" / "longwriter_zero" / "golden"
    script = normalised(render_sbatch(recipe, resolve(recipe), folder), folder)
    if os.environ.get("LWZ_UPDATE_GOLDEN"):
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text()
    assert "#SBATCH --nodes=8\n" in script and "#SBATCH --ntasks-per-node=8\n" in script
    assert "#SBATCH --gres=gpu:8\n" in script and "#SBATCH --time=2880\n" in script
    assert "#SBATCH --signal=USR2@90\n" in script and "#SBATCH --requeue\n" in script


@pytest.mark.slurm
def test_cluster_profile_options_reach_the_script(tmp_path: Path) -> None:
    cluster = yaml.safe_load(PROFILE.read_text())["cluster"]
    sbatch = ["cluster.sbatch.exclusive=user", "cluster.sbatch.mail-type=FAIL"]
    recipe = load_recipe(_paper_recipe_with(tmp_path, cluster), sbatch)
    folder = tmp_path / "runs" / "x"
    script = render_sbatch(recipe, resolve(recipe), folder)
    for option in ("--account=my_project", "--qos=normal", "--constraint=h100", "--mem=1800GB",
                   "--time=2880", "--exclusive=user", "--mail-type=FAIL", "--cpus-per-task=12"):
        assert f"#SBATCH {option}\n" in script, option
    setup = script.split("# setup\n")[1].split("\n\n")[0].splitlines()
    assert setup == cluster["setup"]
    assert "--container-image" not in script


@pytest.mark.slurm
def test_container_runs_the_image_python_through_pyxis(tmp_path: Path) -> None:
    recipe = load_recipe(_paper_recipe_with(tmp_path, {"container": "/images/lwz.sqsh"}),
                         [f"logging.output_dir={tmp_path / 'runs'}"])
    script = render_sbatch(recipe, resolve(recipe), tmp_path / "runs" / "x")
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--container-image=/images/lwz.sqsh" in srun
    assert f"--container-mounts={tmp_path / 'runs'}:{tmp_path / 'runs'}" in srun
    assert " python3 -u -m submitit.core._submit " in srun


@pytest.mark.slurm
def test_cpu_recipe_gets_one_task_per_worker_and_no_gpus(tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes" / "tiny.yaml", ["cluster.gpus_per_node=2", "actor.tp=2",
                                                          "cluster.cpus_per_task=1", "cluster.mem_gb=4"])
    script = render_sbatch(recipe, resolve(recipe), tmp_path / "tiny" / "r")
    assert "#SBATCH --ntasks-per-node=2\n" in script and "#SBATCH --cpus-per-task=1\n" in script
    assert "#SBATCH --mem=4GB\n" in script and "#SBATCH --job-name=tiny/r\n" in script
    assert "gres" not in script and "partition" not in script


# --- real jobs -------------------------------------------------------------------------------




# SLURM's part is the subject here: the reward-model engine (tested in the loop elsewhere) stays out.
NO_RM = "rewards.terms=[{name: length}, {name: format}]"


def tiny_run(tmp_path: Path, run: str, *overrides: str) -> tuple[Path, str]:
    """`lwz run recipes/tiny.yaml cluster.launcher=slurm ...` without the writing RM; returns the run
    folder and job id."""
    out = lwz("run", "recipes/tiny.yaml", "cluster.launcher=slurm", "cluster.cpus_per_task=1",
              "logging.wandb.mode=disabled", f"logging.output_dir={tmp_path / 'runs'}", f"logging.run={run}",
              NO_RM, *overrides)
    assert out.returncode == 0, out.stderr
    job_id = re.search(r"submitted job (\S+)", out.stdout).group(1)
    folder = Path(re.search(r"run folder: (\S+)", out.stdout).group(1))
    assert folder == (tmp_path / "runs" / "tiny" / run).resolve()
    assert read_job_record(folder)["job_id"] == job_id
    return folder, job_id



@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_status_logs_and_cancel_on_a_real_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes" / "tiny.yaml", [
        "cluster.cpus_per_task=1", f"logging.output_dir={tmp_path}", "logging.run=held",
        "cluster.setup=[echo lwz-setup-marker, sleep 120]"])
    plan = resolve(recipe)
    folder = create_run_folder(recipe, plan)
    assert submit(recipe, plan, folder) == 0
    job_id = read_job_record(folder)["job_id"]
    wait_for_state(job_id, lambda s: s == "RUNNING", 30)
    deadline = time.monotonic() + 20
    while "lwz-setup-marker" not in (logs := lwz("logs", str(folder))).stdout:
        assert time.monotonic() < deadline, logs.stderr
        time.sleep(0.5)

    status = lwz("status", str(folder))
    assert status.returncode == 0, status.stderr
    assert f"job       {job_id}  RUNNING" in status.stdout
    assert "no step logged yet (0/10)" in status.stdout
    bad_rank = lwz("logs", str(folder), "--rank", "3")
    assert bad_rank.returncode == 2 and "--rank: 3 is not a rank of the job (0-0)" in bad_rank.stderr

    cancel = lwz("cancel", str(folder))
    assert cancel.returncode == 0 and f"cancelled job {job_id}" in cancel.stdout
    assert wait_until_done(job_id, 30) == "CANCELLED"
    followed = lwz("logs", str(folder), "-f", timeout=30)  # returns because the job has ended
    assert followed.returncode == 0 and "lwz-setup-marker" in followed.stdout


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_a_failing_run_fails_once_without_requeue(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes" / "tiny.yaml", ["cluster.cpus_per_task=1", f"logging.output_dir={tmp_path}",
                                                          "logging.run=broken"])
    plan = resolve(recipe)
    folder = create_run_folder(recipe, plan)
    recipe_file = folder / "recipe.yaml"
    recipe_file.write_text(recipe_file.read_text().replace("  steps: 10\n", "  steps: -1\n"))
    submit(recipe, plan, folder)
    job_id = read_job_record(folder)["job_id"]

    assert wait_until_done(job_id, 60) == "FAILED"
    time.sleep(3)  # a requeue would show up within a few seconds (cred_expire=5 on the test cluster)
    assert job_state(job_id) == "FAILED"
    starts = [e for e in read_requeues(folder)["events"] if e["event"] == "start"]
    assert [e["restart_count"] for e in starts] == [0]
    assert "schedule.steps: -1 is out of range" in lwz("logs", str(folder)).stdout
    # once SLURM has forgotten a job (MinJobAge), its state comes from submitit's result file
    shutil.copy(folder / "slurm" / f"{job_id}_0_result.pkl", folder / "slurm" / "999999_0_result.pkl")
    assert job_state("999999", folder / "slurm") == "FAILED"
    assert job_state("999999") == "UNKNOWN"


# --- end to end: the real training loop on SLURM ---------------------------------------------

@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(900)
def test_two_task_tiny_run_with_tensor_parallel_two(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    folder, job_id = tiny_run(tmp_path, "tp2", "cluster.gpus_per_node=2", "actor.tp=2", "schedule.steps=2",
                              "schedule.save_every=1")
    assert wait_until_done(job_id, 840) == "COMPLETED", lwz("logs", str(folder)).stdout[-3000:]
    assert logged_steps(folder) == [1, 2]
    assert (folder / "slurm" / f"{job_id}_1_log.out").is_file()
    status = lwz("status", str(folder)).stdout
    assert "COMPLETED" in status and "step 2/2" in status


def wait_for_event(folder: Path, event: str, restart_count: int, timeout_s: float) -> None:
    """Wait until RUN/slurm/requeues.json has `event` recorded at `restart_count`."""
    deadline = time.monotonic() + timeout_s
    while not any(e["event"] == event and e["restart_count"] == restart_count
                  for e in read_requeues(folder)["events"]):
        assert time.monotonic() < deadline, f"no {event} at restart {restart_count}: {read_requeues(folder)}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_usr2_requeues_until_max_requeues_is_used_up(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    folder, job_id = tiny_run(tmp_path, "usr2", "schedule.steps=1000", "cluster.max_requeues=1")
    wait_for_event(folder, "start", 0, 60)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    wait_for_event(folder, "start", 1, 60)  # checkpoint() requeued a fresh worker of the run folder
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)

    assert wait_until_done(job_id, 120) != "COMPLETED"
    events = [(e["event"], e["restart_count"]) for e in read_requeues(folder)["events"] if e["event"] != "SIGTERM"]
    assert events == [("start", 0), ("requeue", 0), ("start", 1), ("not_requeued", 1)]
    assert "Job not requeued because: checkpoint function returned None" in lwz("logs", str(folder)).stdout


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_requeue_beyond_max_requeues_fails_at_start(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    folder, job_id = tiny_run(tmp_path, "sigterm", "schedule.steps=1000", "cluster.max_requeues=0")
    wait_for_event(folder, "start", 0, 60)
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)  # SIGTERM, kill, restart

    assert wait_until_done(job_id, 120) == "FAILED"
    events = [(e["event"], e["restart_count"]) for e in read_requeues(folder)["events"]]
    assert events == [("start", 0), ("SIGTERM", 0), ("start", 1)]
    assert "restarted 1 times, more than the 0 allowed" in lwz("logs", str(folder)).stdout


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(1200)
def test_requeued_run_resumes_from_its_checkpoint(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    steps = 3
    folder, job_id = tiny_run(tmp_path, "requeued", f"schedule.steps={steps}", "schedule.save_every=1")
    deadline = time.monotonic() + 800
    while not (folder / "ckpt" / "latest").is_file() or not logged_steps(folder):
        assert time.monotonic() < deadline and job_state(job_id) in ACTIVE_STATES, "no checkpoint before the requeue"
        time.sleep(0.5)
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)

    assert wait_until_done(job_id, 1000) == "COMPLETED", lwz("logs", str(folder)).stdout[-3000:]
    assert logged_steps(folder) == list(range(1, steps + 1))
    events = read_requeues(folder)["events"]
    assert [e["restart_count"] for e in events if e["event"] == "start"] == [0, 1]
    assert any(e["event"] == "SIGTERM" for e in events)
    assert "resumed from" in lwz("logs", str(folder)).stdout
