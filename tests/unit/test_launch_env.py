"""DistEnv from hand-written torchrun and SLURM environments; node lists and task counts (against SLURM's
own `scontrol`: tests/slurm/test_scontrol.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lwz.errors import LwzError
from lwz.launch.env import (
    DEFAULT_MASTER_PORT,
    DistEnv,
    dist_env_from_environ,
    expand_nodelist,
    export_torch_env,
    first_host,
    parse_tasks_per_node,
)
from lwz.launch.ports import JOB_PORTS, SLURM_PORT_BASE, slurm_job_port

# Task 11 of a 2-node job with 8 tasks per node, as srun sets it up.
SLURM_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "11",
    "SLURM_NTASKS": "16",
    "SLURM_LOCALID": "3",
    "SLURM_NODEID": "1",
    "SLURM_NNODES": "2",
    "SLURM_TASKS_PER_NODE": "8(x2)",
    "SLURM_JOB_NODELIST": "gpu[007-008]",
}

TORCHRUN_TASK = {
    "RANK": "5",
    "WORLD_SIZE": "8",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "4",
    "GROUP_RANK": "1",
    "MASTER_ADDR": "node-a",
    "MASTER_PORT": "29400",
}


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("vm", ["vm"]),
        ("gpu[001-004,007]", ["gpu001", "gpu002", "gpu003", "gpu004", "gpu007"]),
        ("gpu[8-11]", ["gpu8", "gpu9", "gpu10", "gpu11"]),
        ("a[1-2],b3,c[09-10]", ["a1", "a2", "b3", "c09", "c10"]),
        ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
        ("node-1.cluster,node-2.cluster", ["node-1.cluster", "node-2.cluster"]),
    ],
)
def test_expand_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["gpu[1-3", "gpu1-3]", "gpu[3-1]", "gpu[a-b]", "", ","])
def test_expand_nodelist_rejects_malformed_lists(nodelist: str) -> None:
    with pytest.raises(LwzError, match="SLURM_JOB_NODELIST"):
        expand_nodelist(nodelist)


@pytest.mark.parametrize(
    ("value", "counts"),
    [("8", [8]), ("8(x2)", [8, 8]), ("8(x2),4", [8, 8, 4]), ("2,1(x3)", [2, 1, 1, 1])],
)
def test_parse_tasks_per_node(value: str, counts: list[int]) -> None:
    assert parse_tasks_per_node(value) == counts


def test_parse_tasks_per_node_names_the_variable() -> None:
    with pytest.raises(LwzError, match=r"SLURM_TASKS_PER_NODE: cannot parse '8\(2\)'"):
        parse_tasks_per_node("8(2)")


def test_slurm_task() -> None:
    env = dist_env_from_environ(SLURM_TASK)
    assert env == DistEnv(
        rank=11,
        world_size=16,
        local_rank=3,
        local_world_size=8,
        node_rank=1,
        num_nodes=2,
        master_addr="gpu007",
        master_port=slurm_job_port(4242),
        source="slurm",
    )


def test_slurm_uneven_tasks_per_node_gives_this_nodes_count() -> None:
    uneven = {"SLURM_NTASKS": "12", "SLURM_PROCID": "9", "SLURM_TASKS_PER_NODE": "8,4"}
    environ = SLURM_TASK | uneven
    assert dist_env_from_environ(environ).local_world_size == 4


def test_slurm_step_variables_win_over_job_ones() -> None:
    environ = SLURM_TASK | {
        "SLURM_STEP_NUM_TASKS": "12",
        "SLURM_STEP_TASKS_PER_NODE": "6(x2)",
        "SLURM_STEP_NODELIST": "gpu[008-009]",
    }
    env = dist_env_from_environ(environ)
    assert (env.world_size, env.local_world_size, env.master_addr) == (12, 6, "gpu008")


def test_slurm_ntasks_per_node_when_no_per_node_list() -> None:
    environ = {k: v for k, v in SLURM_TASK.items() if k != "SLURM_TASKS_PER_NODE"}
    assert dist_env_from_environ(environ | {"SLURM_NTASKS_PER_NODE": "8"}).local_world_size == 8
    assert dist_env_from_environ(environ).local_world_size == 8  # 16 tasks over 2 nodes


def test_slurm_jobs_near_each_other_share_no_port_and_stay_below_the_ephemeral_range() -> None:
    """Each job takes a block of JOB_PORTS ports (actor world, engine world, bridge): no two blocks overlap."""
    firsts = [dist_env_from_environ(SLURM_TASK | {"SLURM_JOB_ID": str(job_id)}).master_port
              for job_id in range(100_000, 100_050)]
    ports = [first + offset for first in firsts for offset in range(JOB_PORTS)]
    assert len(set(ports)) == 50 * JOB_PORTS
    assert all(SLURM_PORT_BASE <= port < 32768 for port in ports)


def test_slurm_respects_exported_master() -> None:
    env = dist_env_from_environ(SLURM_TASK | {"MASTER_ADDR": "login1", "MASTER_PORT": "31000"})
    assert (env.master_addr, env.master_port) == ("login1", 31000)


def test_sbatch_script_without_a_step_is_a_single_process() -> None:
    environ = {k: v for k, v in SLURM_TASK.items() if k != "SLURM_STEP_ID"}
    assert dist_env_from_environ(environ) == DistEnv()


def test_torchrun_task() -> None:
    env = dist_env_from_environ(TORCHRUN_TASK)
    assert env == DistEnv(
        rank=5,
        world_size=8,
        local_rank=1,
        local_world_size=4,
        node_rank=1,
        num_nodes=2,
        master_addr="node-a",
        master_port=29400,
        source="torchrun",
    )


def test_torchrun_wins_over_slurm() -> None:
    """torchrun started inside a SLURM step: its variables describe this process."""
    assert dist_env_from_environ(SLURM_TASK | TORCHRUN_TASK).source == "torchrun"


def test_torchrun_without_local_variables_infers_them() -> None:
    env = dist_env_from_environ({"RANK": "2", "WORLD_SIZE": "4"})
    assert (env.local_rank, env.local_world_size, env.node_rank, env.num_nodes) == (2, 4, 0, 1)
    assert env.master_port == DEFAULT_MASTER_PORT


def test_single_process_default() -> None:
    env = dist_env_from_environ({})
    assert env == DistEnv(rank=0, world_size=1, master_addr="127.0.0.1", master_port=29500)
    assert env.source == "single"


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(LwzError, match="environment: RANK: 'two' is not an integer"):
        dist_env_from_environ(TORCHRUN_TASK | {"RANK": "two"})
    with pytest.raises(LwzError, match=r"rank: 9 is not in \[0, 8\)"):
        dist_env_from_environ(TORCHRUN_TASK | {"RANK": "9"})
    with pytest.raises(LwzError, match="SLURM_TASKS_PER_NODE: '8' has 1 nodes, SLURM_NODEID is 1"):
        dist_env_from_environ(SLURM_TASK | {"SLURM_TASKS_PER_NODE": "8"})


def test_export_torch_env_round_trips() -> None:
    environ: dict[str, str] = {}
    slurm_env = dist_env_from_environ(SLURM_TASK)
    export_torch_env(slurm_env, environ)
    assert environ == {
        "RANK": "11",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "3",
        "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu007",
        "MASTER_PORT": str(slurm_job_port(4242)),
    }
    again = dist_env_from_environ(environ)
    assert (again.rank, again.world_size, again.local_rank, again.node_rank, again.num_nodes) == (
        11, 16, 3, 1, 2
    )
    assert (again.master_addr, again.master_port) == (slurm_env.master_addr, slurm_env.master_port)


def test_first_host_without_scontrol_uses_the_parser(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol here
    assert first_host("gpu[003-004],cpu1") == "gpu003"
