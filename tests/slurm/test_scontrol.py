"""lwz's host-list parser against SLURM's own `scontrol show hostnames` (which reads the SLURM config even to
expand a list, so these tests start the one-node test cluster)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from fixtures_slurm import SlurmCluster

from lwz.launch.env import expand_nodelist, first_host

pytestmark = pytest.mark.slow   # starts the SLURM test cluster


@pytest.mark.slurm
@pytest.mark.parametrize(
    "nodelist", ["vm", "gpu[001-004,007]", "a[1-2],b3,c[09-10]", "rack[1-2]-n[01-02]", "gpu[8-11]"]
)
def test_parser_agrees_with_scontrol(nodelist: str, slurm_cluster: SlurmCluster) -> None:
    scontrol = shutil.which("scontrol")
    assert scontrol, "scontrol not found; install slurm-wlm (slurm/test_cluster/README.md)"
    shown = subprocess.run(
        [scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    assert expand_nodelist(nodelist) == shown.stdout.split()
    assert first_host(nodelist) == shown.stdout.split()[0]


@pytest.mark.slurm
def test_first_host_falls_back_when_scontrol_rejects_the_list(slurm_cluster: SlurmCluster) -> None:
    assert shutil.which("scontrol"), "scontrol not found; install slurm-wlm"
    shown = subprocess.run(
        ["scontrol", "show", "hostnames", "gpu[1-3,5]x"], capture_output=True, text=True
    )
    assert shown.stdout == "" and "Invalid hostlist" in shown.stderr  # and exit status 0
    assert first_host("gpu[1-3,5]x") == "gpu1x"
