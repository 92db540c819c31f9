"""This process's place in a distributed run, read from torchrun's or SLURM's environment.

Precedence: torchrun's variables (RANK, WORLD_SIZE, ...) when set, else SLURM's when the
process is a task of an `srun` step (SLURM_STEP_ID is set), else a single process. A process
started directly by an sbatch script (no step) is alone, whatever the job's task count says.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from lwz.errors import LwzError
from lwz.launch.ports import slurm_job_port

logger = logging.getLogger(__name__)

DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 29500

_WHERE = "environment"


@dataclass(frozen=True)
class DistEnv:
    """Coordinates of one process; `source` says where they came from (torchrun|slurm|single)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    master_addr: str = DEFAULT_MASTER_ADDR
    master_port: int = DEFAULT_MASTER_PORT
    source: str = "single"

    def __post_init__(self) -> None:
        for name, index, size in (
            ("rank", self.rank, self.world_size),
            ("local_rank", self.local_rank, self.local_world_size),
            ("node_rank", self.node_rank, self.num_nodes),
        ):
            if not 0 <= index < size:
                raise LwzError(_WHERE, name, f"{index} is not in [0, {size}) ({self.source})")


def dist_env_from_environ(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """Derive this process's DistEnv from torchrun's, else SLURM's, else single-process defaults."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return _from_torchrun(environ)
    if "SLURM_PROCID" in environ and "SLURM_STEP_ID" in environ:
        return _from_slurm(environ)
    return DistEnv(
        master_addr=environ.get("MASTER_ADDR", DEFAULT_MASTER_ADDR),
        master_port=_int(environ, "MASTER_PORT", DEFAULT_MASTER_PORT),
    )


def export_torch_env(env: DistEnv, environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the variables torch.distributed's env:// rendezvous reads."""
    environ.update(
        RANK=str(env.rank),
        WORLD_SIZE=str(env.world_size),
        LOCAL_RANK=str(env.local_rank),
        LOCAL_WORLD_SIZE=str(env.local_world_size),
        MASTER_ADDR=env.master_addr,
        MASTER_PORT=str(env.master_port),
    )


def _from_torchrun(environ: Mapping[str, str]) -> DistEnv:
    rank, world_size = _int(environ, "RANK"), _int(environ, "WORLD_SIZE")
    local_world_size = _int(environ, "LOCAL_WORLD_SIZE", world_size)
    return DistEnv(
        rank=rank,
        world_size=world_size,
        local_rank=_int(environ, "LOCAL_RANK", rank % local_world_size),
        local_world_size=local_world_size,
        node_rank=_int(environ, "GROUP_RANK", rank // local_world_size),
        num_nodes=max(1, world_size // local_world_size),
        master_addr=environ.get("MASTER_ADDR", DEFAULT_MASTER_ADDR),
        master_port=_int(environ, "MASTER_PORT", DEFAULT_MASTER_PORT),
        source="torchrun",
    )


def _from_slurm(environ: Mapping[str, str]) -> DistEnv:
    rank = _int(environ, "SLURM_PROCID")
    world_size = _int(environ, "SLURM_STEP_NUM_TASKS", _int(environ, "SLURM_NTASKS", 1))
    num_nodes = _int(environ, "SLURM_STEP_NUM_NODES", _int(environ, "SLURM_NNODES", 1))
    node_rank = _int(environ, "SLURM_NODEID", 0)
    nodelist = _first_set(environ, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    if "MASTER_PORT" in environ:
        master_port = _int(environ, "MASTER_PORT")
    elif "SLURM_JOB_ID" in environ:
        master_port = slurm_job_port(_int(environ, "SLURM_JOB_ID"))
    else:
        master_port = DEFAULT_MASTER_PORT
    return DistEnv(
        rank=rank,
        world_size=world_size,
        local_rank=_int(environ, "SLURM_LOCALID", 0),
        local_world_size=_slurm_local_world_size(environ, node_rank, world_size, num_nodes),
        node_rank=node_rank,
        num_nodes=num_nodes,
        master_addr=environ.get("MASTER_ADDR")
        or (first_host(nodelist) if nodelist else DEFAULT_MASTER_ADDR),
        master_port=master_port,
        source="slurm",
    )


def _slurm_local_world_size(
    environ: Mapping[str, str], node_rank: int, world_size: int, num_nodes: int
) -> int:
    """Tasks on this node: the per-node list entry, else --ntasks-per-node, else an even split."""
    for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if key in environ:
            counts = parse_tasks_per_node(environ[key], key)
            if node_rank >= len(counts):
                message = f"'{environ[key]}' has {len(counts)} nodes, SLURM_NODEID is {node_rank}"
                raise LwzError(_WHERE, key, message)
            return counts[node_rank]
    return _int(environ, "SLURM_NTASKS_PER_NODE", max(1, world_size // num_nodes))


def parse_tasks_per_node(value: str, key: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """Expand SLURM's task-count form, e.g. '8(x2),4' -> [8, 8, 4]."""
    counts: list[int] = []
    for item in value.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not match:
            expected = "expected forms like '8', '8(x2)' or '8(x2),4'"
            raise LwzError(_WHERE, key, f"cannot parse '{value}'; {expected}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list, by `scontrol show hostnames` if at hand, else here."""
    if shutil.which("scontrol"):
        result = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30
        )
        hosts = result.stdout.split()
        if result.returncode == 0 and hosts:
            return hosts[0]
        logger.debug("scontrol show hostnames %r failed: %s", nodelist, result.stderr.strip())
    return expand_nodelist(nodelist)[0]


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a compressed SLURM node list: 'gpu[01-02,07],cpu1' -> gpu01 gpu02 gpu07 cpu1."""
    groups = _split_top_level(nodelist)
    hosts = [host for group in groups for host in _expand_group(group, nodelist)]
    if not hosts:
        raise LwzError(_WHERE, "SLURM_JOB_NODELIST", f"no hosts in '{nodelist}'")
    return hosts


def _split_top_level(nodelist: str) -> list[str]:
    """Split at commas outside brackets."""
    groups, current, depth = [], "", 0
    for char in nodelist:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise LwzError(_WHERE, "SLURM_JOB_NODELIST", f"unbalanced brackets in '{nodelist}'")
        if char == "," and depth == 0:
            groups.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise LwzError(_WHERE, "SLURM_JOB_NODELIST", f"unbalanced brackets in '{nodelist}'")
    return [group.strip() for group in groups + [current] if group.strip()]


def _expand_group(group: str, nodelist: str) -> list[str]:
    """Expand one group such as 'rack[1-2]-n[01-02]' (several brackets give their product)."""
    match = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\](.*)", group)
    if not match:
        return [group]
    prefix, ranges, rest = match.groups()
    tails = _expand_group(rest, nodelist) if rest else [""]
    return [prefix + index + tail for index in _expand_ranges(ranges, nodelist) for tail in tails]


def _expand_ranges(ranges: str, nodelist: str) -> list[str]:
    """'001-003,7' -> ['001', '002', '003', '7'], keeping each range's zero padding."""
    indices: list[str] = []
    for item in ranges.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", item)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise LwzError(_WHERE, "SLURM_JOB_NODELIST", f"bad range '{item}' in '{nodelist}'")
        low, high = match.group(1), match.group(2) or match.group(1)
        indices.extend(f"{i:0{len(low)}d}" for i in range(int(low), int(high) + 1))
    return indices


def _first_set(environ: Mapping[str, str], *keys: str) -> str | None:
    return next((environ[key] for key in keys if environ.get(key)), None)


def _int(environ: Mapping[str, str], key: str, default: int | None = None) -> int:
    """An integer variable; a missing one gives `default` (an error when there is none)."""
    if key not in environ:
        if default is None:
            raise LwzError(_WHERE, key, "is not set")
        return default
    try:
        return int(environ[key])
    except ValueError:
        raise LwzError(_WHERE, key, f"'{environ[key]}' is not an integer") from None


def role_env(job: DistEnv, first: int, size: int, master_addr: str, master_port: int) -> DistEnv:
    """This process's coordinates in its role's own world, the job's global ranks [first, first + size)
    (the actor's ranks, or one engine group's on GPUs of its own); the node-local GPU index is kept."""
    return DistEnv(rank=job.rank - first, world_size=size, local_rank=job.local_rank,
                   local_world_size=job.local_world_size, node_rank=job.node_rank, num_nodes=job.num_nodes,
                   master_addr=master_addr, master_port=master_port, source=job.source)


def rank_host(job: DistEnv, rank: int, environ: Mapping[str, str] = os.environ) -> str:
    """The host of a global rank: the job's master on one node, else its node in SLURM's node list (tasks
    are placed in blocks of `local_world_size` per node, as the plan asks)."""
    if job.num_nodes == 1 or rank < job.local_world_size:
        return job.master_addr
    nodelist = _first_set(environ, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    if nodelist is None:
        raise LwzError(_WHERE, "SLURM_JOB_NODELIST", "is not set: cannot place the engine ranks' rendezvous")
    return expand_nodelist(nodelist)[rank // job.local_world_size]
