"""The test SLURM clusters as session fixtures: one node on this host, and two nodes in network namespaces.

Tests use them with `from fixtures_slurm import slurm_cluster  # noqa: F401` (or `two_nodes`). Each runs
slurm/test_cluster/start.sh, which returns at once when the cluster is already up and otherwise starts
it; when that fails the test fails with the script's output. A cluster the fixture started is stopped
(and its namespaces, configuration and state removed) when the session ends, even after failures.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "slurm" / "test_cluster"
TWO_NODES_ENV = dict(line.split("=", 1) for line in (SCRIPTS / "two_nodes.env").read_text().splitlines()
                     if line and not line.startswith("#"))


@dataclass(frozen=True)
class SlurmCluster:
    """What tests need to know about a running test cluster; `env` names it to SLURM's commands."""

    partition: str
    node: str
    cpus: int
    nodes: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def script(self, name: str, *args: str) -> subprocess.CompletedProcess:
        """Run slurm/test_cluster/NAME with this cluster's environment."""
        return subprocess.run(["bash", str(SCRIPTS / name), *args], env=os.environ | self.env,
                              capture_output=True, text=True, timeout=180)


def _start(env: dict[str, str]) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(partition=os.environ.get("LWZ_SLURM_PARTITION", "debug"), node="", cpus=0, env=env)
    started = cluster.script("start.sh")
    if started.returncode != 0:
        cluster.script("stop.sh", "--purge")
        pytest.fail(f"start.sh failed (exit {started.returncode}):\n{started.stdout}{started.stderr}")
    sinfo = subprocess.run(
        ["sinfo", "--noheader", "--Node", "--partition", cluster.partition, "--format", "%N %c"],
        capture_output=True, text=True, check=True, timeout=30, env=os.environ | env,
    )
    rows = [line.split() for line in sinfo.stdout.splitlines()]
    yield SlurmCluster(partition=cluster.partition, node=rows[0][0], cpus=int(rows[0][1]),
                       nodes=tuple(row[0] for row in rows), env=env)
    if "already up" not in started.stdout:
        stopped = cluster.script("stop.sh", "--purge")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The single-node cluster (this host, the default /etc/slurm/slurm.conf)."""
    yield from _start({})


@pytest.fixture(scope="session")
def two_node_cluster() -> Iterator[SlurmCluster]:
    """Nodes lwzn1 and lwzn2, each in a network namespace of its own; its slurm.conf is not the default
    one, so SLURM's commands need `env` (see `two_nodes`)."""
    yield from _start(TWO_NODES_ENV)


@pytest.fixture()
def two_nodes(two_node_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The two-node cluster, with this test's SLURM commands (and the lwz commands it starts) pointed at it."""
    for key, value in two_node_cluster.env.items():
        monkeypatch.setenv(key, value)
    return two_node_cluster
