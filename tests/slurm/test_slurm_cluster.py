"""Real jobs on the single-node test SLURM cluster through submitit: multi-task, arrays, requeue.

Requeue, as measured on slurm-wlm 22.05 (see slurm/test_cluster/README.md):
- an admin's `scontrol requeue <jobid>` kills the job (submitit ignores SIGTERM, so the job
  runs on until SIGKILL after KillWait) and starts the same submission again: the job resumes
  from what it saved itself, and SLURM_RESTART_COUNT tells it that it was restarted;
- USR2 (what submitit's `--signal=USR2@90` asks SLURM to send before the time limit) makes
  submitit call the callable's `checkpoint()`, pickle the DelayedSubmission it returns and
  requeue the job itself; the copy of the callable in memory, with its progress, comes back.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import submitit
from fixtures_slurm import SlurmCluster

from lwz.launch.env import DistEnv, dist_env_from_environ
from lwz.launch.ports import slurm_job_port

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(180)]

HERE = Path(__file__).resolve().parent   # the jobs unpickle functions of this module, which imports tests/ modules


@pytest.fixture
def executor(
    slurm_cluster: SlurmCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> submitit.AutoExecutor:
    """A SLURM executor on the test partition whose jobs can import this test module."""
    paths = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=10, cpus_per_task=1)
    return ex


def save_progress(progress: Path, steps: int) -> None:
    """Atomically record the steps done (a kill mid-write leaves the old value)."""
    partial = progress.with_suffix(".partial")
    partial.write_text(str(steps))
    os.replace(partial, progress)


def read_progress(progress: Path) -> int:
    """The steps recorded so far, 0 before the first save."""
    return int(progress.read_text()) if progress.exists() else 0


def _wait_for_progress(progress: Path, steps: int, timeout_s: float = 60.0) -> None:
    """Wait until a job has recorded `steps` or more."""
    deadline = time.monotonic() + timeout_s
    while read_progress(progress) < steps:
        assert time.monotonic() < deadline, f"no progress {steps} in {progress} after {timeout_s} s"
        time.sleep(0.2)


def rendezvous_and_report() -> tuple[str, DistEnv, float]:
    """Job body for one task: SLURM's rank, our DistEnv, and an all-reduce over gloo with it."""
    import torch
    import torch.distributed as dist

    from lwz.launch.env import export_torch_env

    env = dist_env_from_environ()
    export_torch_env(env)
    dist.init_process_group("gloo", init_method="env://")
    total = torch.tensor([float(env.rank + 1)])
    dist.all_reduce(total)
    dist.destroy_process_group()
    return os.environ["SLURM_PROCID"], env, total.item()


def test_two_tasks_get_ranks_and_rendezvous(
    executor: submitit.AutoExecutor, slurm_cluster: SlurmCluster
) -> None:
    executor.update_parameters(nodes=1, tasks_per_node=2)
    job = executor.submit(rendezvous_and_report)
    results = job.results()

    assert [procid for procid, _, _ in results] == ["0", "1"]
    envs = [env for _, env, _ in results]
    assert [env.rank for env in envs] == [0, 1]
    assert [env.local_rank for env in envs] == [0, 1]
    assert {(env.world_size, env.local_world_size, env.num_nodes, env.source) for env in envs} == {
        (2, 2, 1, "slurm")
    }
    expected_port = slurm_job_port(int(job.job_id))
    masters = {(env.master_addr, env.master_port) for env in envs}
    assert masters == {(slurm_cluster.node, expected_port)}
    assert [total for _, _, total in results] == [3.0, 3.0]  # 1 + 2 summed on both ranks


def timed_sleep(index: int) -> tuple[int, float, float]:
    """Job body for one array element: its index and when it started and ended."""
    start = time.time()
    time.sleep(3.0)
    return index, start, time.time()


def test_job_array_runs_its_elements_side_by_side(executor: submitit.AutoExecutor) -> None:
    jobs = executor.map_array(timed_sleep, [0, 1, 2, 3])
    results = [job.result() for job in jobs]

    assert [index for index, _, _ in results] == [0, 1, 2, 3]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "one array, one parent job id"
    latest_start = max(start for _, start, _ in results)
    earliest_end = min(end for _, _, end in results)
    assert latest_start < earliest_end, "the four 1-CPU elements should overlap on the test node"


def count_with_progress_file(steps: int, progress: Path) -> tuple[int, int]:
    """Job body: count to `steps`, saving progress after each step and resuming from it.

    Returns the step it resumed from and SLURM_RESTART_COUNT.
    """
    resumed_from = read_progress(progress)
    for step in range(resumed_from, steps):
        time.sleep(0.2)
        save_progress(progress, step + 1)
    return resumed_from, int(os.environ.get("SLURM_RESTART_COUNT", "0"))


def test_scontrol_requeue_resumes_from_saved_progress(
    executor: submitit.AutoExecutor, tmp_path: Path
) -> None:
    progress = tmp_path / "progress.txt"
    job = executor.submit(count_with_progress_file, 40, progress)
    _wait_for_progress(progress, 2)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30)

    resumed_from, restart_count = job.result()

    assert restart_count == 1
    assert 2 <= resumed_from < 40
    assert read_progress(progress) == 40


class CheckpointableCounter(submitit.helpers.Checkpointable):
    """Counts to `steps` in memory; submitit pickles it (with its count) when signalled."""

    def __init__(self, steps: int, progress: Path) -> None:
        self.steps, self.progress = steps, progress
        self.done = 0
        self.resumed_from: list[int] = []

    def __call__(self) -> tuple[list[int], int]:
        self.resumed_from.append(self.done)
        while self.done < self.steps:
            time.sleep(0.3)
            self.done += 1
            save_progress(self.progress, self.done)
        return self.resumed_from, int(os.environ.get("SLURM_RESTART_COUNT", "0"))


def test_preemption_signal_checkpoints_and_requeues(
    executor: submitit.AutoExecutor, tmp_path: Path
) -> None:
    progress = tmp_path / "progress.txt"
    executor.update_parameters(timeout_min=60)  # a short job's USR2 counts as a time-out
    job = executor.submit(CheckpointableCounter(10, progress))
    _wait_for_progress(progress, 2)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)

    resumed_from, restart_count = job.result()

    assert restart_count == 1
    assert resumed_from[0] == 0 and 2 <= resumed_from[1] < 10 and len(resumed_from) == 2
    assert read_progress(progress) == 10
    assert "this job is preempted" in job.stdout()
