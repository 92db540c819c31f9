"""`lwz pipeline` on SLURM: the stages are a dependency chain, and the two the RL stage waits for run side by
side, one per node of the two-node cluster."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from fixtures_slurm import SlurmCluster
from helpers import lwz

TINY = Path(__file__).resolve().parents[2] / "experiments" / "longwriter_zero_tiny.yaml"


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_on_slurm_the_rl_stage_waits_for_both_stages_it_takes_models_from(two_nodes: SlurmCluster,
                                                                        tmp_path):
    """On the two-node cluster: the first two stages (a node's CPUs each) run side by side, one per node."""
    proc = lwz("pipeline", TINY, f"logging.output_dir={tmp_path}", "cluster.launcher=slurm",
               f"cluster.cpus_per_task={two_nodes.cpus}",
               "logging.wandb.mode=disabled", "cluster.setup=[sleep 120]", timeout=120)
    jobs = dict(re.findall(r"stage (\w+): submitted job (\d+)", proc.stdout))
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert list(jobs) == ["cpt", "rm", "rl"]
        assert f"stage rl: submitted job {jobs['rl']} after job(s) {jobs['cpt']}, {jobs['rm']}" in proc.stdout
        shown = subprocess.run(["scontrol", "show", "job", jobs["rl"]], capture_output=True, text=True,
                               check=True).stdout
        dependency = re.search(r"Dependency=(\S+)", shown).group(1)
        assert f"afterok:{jobs['cpt']}" in dependency and jobs["rm"] in dependency, dependency
        assert "JobState=PENDING" in shown and "Reason=Dependency" in shown, shown
        manifest = json.loads((tmp_path / "longwriter_zero_tiny" / "pipeline.json").read_text())
        assert [(s["name"], s["job_id"]) for s in manifest["stages"]] == list(jobs.items())
        running = {}
        deadline = time.monotonic() + 60
        while len(running) < 2:
            assert time.monotonic() < deadline, f"the cpt and rm stages are not both running: {running}"
            for stage in ("cpt", "rm"):
                shown = subprocess.run(["squeue", "--noheader", "--jobs", jobs[stage], "--format", "%T %N"],
                                       capture_output=True, text=True).stdout.split()
                if shown[:1] == ["RUNNING"]:
                    running[stage] = shown[1]
            time.sleep(0.5)
        assert sorted(running.values()) == ["lwzn1", "lwzn2"], running
    finally:
        subprocess.run(["scancel", *jobs.values()], capture_output=True)
        time.sleep(1)
