"""lwz across two SLURM nodes (lwzn1, lwzn2: network namespaces with addresses of their own, a real
slurmctld and two slurmd; tests/fixtures_slurm.py), each run against its one-node twin (the same recipe,
both ranks on one machine, started locally):

- colocated data parallelism, one rank per node: a task killed on the second node fails the job within
  the collective timeout with one clear line, and `lwz run RUN` resumes it to the twin's metrics;
- a lost node (link down, slurmd and tasks killed): SLURM's node failure requeues the job, which resumes
  by itself once the node is back, to the twin's metrics;
- engines on a node of their own (actor on lwzn1, rollout engine on lwzn2, one_step_off): the twin's metrics;
- a sweep's array elements land on both nodes.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from fixtures_slurm import SlurmCluster
from helpers import (COMPARED, ONE_STEP_OFF, learning_recipe, logged_steps, lwz, metrics, run_to_end, wait_for_state,
                     wait_until_done)

from lwz.commands.runs import ACTIVE_STATES, job_state
from lwz.launch.requeue import read_requeues
from lwz.launch.slurm import read_job_record

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TWO_NODES = ("cluster.launcher=slurm", "cluster.nodes=2", "cluster.gpus_per_node=1", "cluster.cpus_per_task=1")
ONE_NODE = ("cluster.gpus_per_node=2",)
STEPS = 2


def submit(recipe: Path, *overrides: str) -> tuple[Path, str]:
    """`lwz run RECIPE` on the two-node cluster; the run folder and job id."""
    out = lwz("run", str(recipe), *TWO_NODES, *overrides)
    assert out.returncode == 0, out.stderr
    folder = Path(re.search(r"run folder: (\S+)", out.stdout).group(1))
    return folder, read_job_record(folder)["job_id"]


def wait_for_checkpoint(folder: Path, job_id: str) -> None:
    deadline = time.monotonic() + 300
    while not (folder / "ckpt" / "latest").is_file() or not logged_steps(folder):
        assert time.monotonic() < deadline and job_state(job_id) in ACTIVE_STATES, "no checkpoint in 300 s"
        time.sleep(0.3)


def assert_same_metrics(run: list[dict], twin: list[dict], keys: tuple[str, ...] = COMPARED) -> None:
    assert [row["step"] for row in run] == [row["step"] for row in twin]
    for row, expected in zip(run, twin):
        for key in keys:
            assert row[key] == pytest.approx(expected[key], abs=1e-5), (row["step"], key)
    print("\n" + "\n".join(f"step {r['step']}: " + ", ".join(f"{k}={r[k]:.6g}" for k in keys[:4]) for r in run))


def task_pids(job_id: str, rank: int) -> list[int]:
    """The processes of the job's task `rank` (read from their environment)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"SLURM_JOB_ID={job_id}".encode() in environ and f"SLURM_PROCID={rank}".encode() in environ:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def colocated_twin(module_folder, peaked_qwen2) -> tuple[Path, list[dict]]:
    """The one-node run: both data-parallel ranks on this machine, a checkpoint every step."""
    folder = module_folder("twin")
    recipe = learning_recipe(folder, peaked_qwen2, steps=STEPS, save_every=1, run="one-node")
    run_to_end("run", str(recipe), *ONE_NODE)
    return recipe, metrics(folder / "runs" / "learn" / "one-node")


def test_a_task_killed_on_the_second_node_fails_the_job_fast_and_resumes(colocated_twin, two_nodes: SlurmCluster):
    recipe, twin = colocated_twin
    folder, job_id = submit(recipe, "logging.run=killed", "cluster.collective_timeout_s=30")
    wait_for_checkpoint(folder, job_id)
    pids = task_pids(job_id, rank=1)
    assert pids, "no process of task 1"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until_done(job_id, 60) == "FAILED"
    took = time.monotonic() - killed
    logs = lwz("logs", str(folder)).stdout
    error = next(line for line in logs.splitlines() if "another rank of the job is gone" in line)
    print(f"\nfailed {took:.1f} s after the kill: {error}")
    assert took < 60 and "rank 0 on lwzn1" in error and f"lwz run {folder}" in error

    resumed = lwz("run", str(folder))
    assert resumed.returncode == 0, resumed.stderr
    job_id = read_job_record(folder)["job_id"]
    assert wait_until_done(job_id, 300) == "COMPLETED", lwz("logs", str(folder)).stdout[-3000:]
    assert "resumed from" in lwz("logs", str(folder)).stdout
    assert_same_metrics(metrics(folder), twin)
    status = lwz("status", str(folder)).stdout
    assert "nodes     lwzn[1-2] (2 task(s)" in status and "COMPLETED" in status, status
    assert "on lwzn2 (restart 0)" in lwz("logs", str(folder), "--rank", "1").stdout


def test_a_lost_node_requeues_the_job_which_resumes_by_itself(colocated_twin, two_nodes: SlurmCluster):
    recipe, twin = colocated_twin
    folder, job_id = submit(recipe, "logging.run=lost-node", "cluster.collective_timeout_s=120")
    wait_for_checkpoint(folder, job_id)
    lost = two_nodes.script("node.sh", "lose", "2")
    assert lost.returncode == 0, lost.stderr
    try:
        wait_for_state(job_id, lambda s: s == "PENDING", 120)   # SLURM: node failure, job requeued
    finally:
        restored = two_nodes.script("node.sh", "restore", "2")
        assert restored.returncode == 0, restored.stderr
    assert wait_until_done(job_id, 300) == "COMPLETED", lwz("logs", str(folder)).stdout[-3000:]
    log = Path(two_nodes.env["LWZ_SLURM_DIR"], "slurmctld.log").read_text()
    assert f"requeue job JobId={job_id} due to failure of node lwzn2" in log
    starts = [e["restart_count"] for e in read_requeues(folder)["events"] if e["event"] == "start"]
    assert starts == [0, 1]
    assert_same_metrics(metrics(folder), twin)


def test_engines_on_a_node_of_their_own_match_one_node(tmp_path, peaked_qwen2, two_nodes: SlurmCluster):
    """Actor on lwzn1, the rollout engine on lwzn2: weights and batches cross the bridge between nodes."""
    recipe = learning_recipe(tmp_path, peaked_qwen2, steps=2, run="one-node")
    split = tuple(o for o in ONE_STEP_OFF if not o.startswith("cluster.gpus_per_node"))
    run_to_end("run", str(recipe), *ONE_NODE, *split)
    twin = metrics(tmp_path / "runs" / "learn" / "one-node")
    folder, job_id = submit(recipe, "logging.run=two-nodes", *split)
    assert wait_until_done(job_id, 300) == "COMPLETED", lwz("logs", str(folder)).stdout[-3000:]
    plan = (folder / "plan.txt").read_text()
    assert "on GPUs of their own (rank 1), one_step_off" in plan, plan
    assert [row["rollout/staleness"] for row in metrics(folder)] == [0, 1]
    assert_same_metrics(metrics(folder), twin, (*COMPARED, "actor/correction_weight_mean"))
    assert "on lwzn2" in lwz("logs", str(folder), "--rank", "1").stdout
