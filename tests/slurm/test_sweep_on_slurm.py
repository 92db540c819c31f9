"""`lwz sweep` on SLURM: a grid of tiny runs as one job array over the two-node cluster, then `lwz compare`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fixtures_slurm import SlurmCluster
from helpers import lwz

from lwz.commands.runs import ACTIVE_STATES, job_state
from lwz.launch.requeue import read_requeues
from lwz.launch.slurm import read_job_record


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(1200)
def test_tiny_grid_runs_as_one_job_array(two_nodes: SlurmCluster, tmp_path: Path) -> None:
    """On the two-node cluster; each element asks for a whole node's CPUs, so the two at a time land on both."""
    out = lwz("sweep", "experiments/tiny_grid.yaml", "schedule.steps=1", f"logging.output_dir={tmp_path / 'runs'}",
              "rewards.terms=[{name: length}, {name: format}]",  # the job array is the subject, not the RM
              f"cluster.cpus_per_task={two_nodes.cpus}")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "runs" / "tiny_grid" / "sweep.json").read_text())
    assert len(manifest["runs"]) == 4
    assert {r["job_id"] for r in manifest["runs"]} == {f"{manifest['array_job_id']}_{i}" for i in range(4)}
    assert "#SBATCH --array=0-3%2" in next((tmp_path / "runs" / "tiny_grid" / "slurm").glob("*_submission.sh")).read_text()

    deadline = time.monotonic() + 1140
    nodes = set()
    for run in manifest["runs"]:
        while (state := job_state(run["job_id"], manifest["submitit_folder"])) in ACTIVE_STATES or state == "UNKNOWN":
            assert time.monotonic() < deadline, f"{run['name']} still {state}"
            time.sleep(1)
        folder = Path(run["folder"])
        assert state == "COMPLETED", (folder / "slurm" / "job.json").read_text()
        assert read_job_record(folder)["job_id"] == run["job_id"]
        assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1]
        nodes.update(e["nodes"] for e in read_requeues(folder)["events"] if e["event"] == "start")
    assert nodes == {"lwzn1", "lwzn2"}, nodes

    compare = lwz("compare", "experiments/tiny_grid.yaml", f"logging.output_dir={tmp_path / 'runs'}")
    assert compare.returncode == 0, compare.stderr
    assert compare.stdout.count(" 1/1 ") == 4
    assert (tmp_path / "runs" / "tiny_grid" / "compare" / "reward_total.png").is_file()
