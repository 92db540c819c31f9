"""The single-node test SLURM cluster as a session fixture.

Tests use it with `from fixtures_slurm import slurm_cluster  # noqa: F401`. The fixture runs
slurm/test_cluster/start.sh, which returns at once when the node is already up and otherwise
starts slurmctld and slurmd; when that fails the test fails with the script's output.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

START_SCRIPT = Path(__file__).resolve().parents[1] / "slurm" / "test_cluster" / "start.sh"


@dataclass(frozen=True)
class SlurmCluster:
    """What tests need to know about the running test cluster."""

    partition: str
    node: str
    cpus: int


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """Start the test cluster if it is not up and describe it."""
    started = subprocess.run(
        ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=180
    )
    if started.returncode != 0:
        pytest.fail(
            f"{START_SCRIPT} failed (exit {started.returncode}):\n{started.stdout}{started.stderr}"
        )
    partition = os.environ.get("LWZ_SLURM_PARTITION", "debug")
    sinfo = subprocess.run(
        ["sinfo", "--noheader", "--Node", "--partition", partition, "--format", "%N %c"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    node, cpus = sinfo.stdout.split()[:2]
    return SlurmCluster(partition=partition, node=node, cpus=int(cpus))
