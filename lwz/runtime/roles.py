"""Which world a rank joins: the actor's, or that of an engine group on GPUs of its own (the plan's roles).

Colocated runs have one world, the job's. With `rollout.colocate: false` the actor's ranks (the job's
first ones) keep the job's rendezvous port and the engine ranks take the next one, each role its own
torch.distributed world; the bridge (lwz/runtime/bridge.py) joins them on the third (lwz/launch/ports.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lwz.launch.env import DistEnv, dist_env_from_environ, export_torch_env, rank_host, role_env
from lwz.plan.resolve import Plan
from lwz.launch.ports import ACTOR_PORT, BRIDGE_PORT, ENGINE_PORT
from lwz.runtime.bridge import Bridge
from lwz.runtime.device import backend_for, pick_device

__all__ = ["RoleWorld", "join_role"]


@dataclass(frozen=True)
class RoleWorld:
    """This rank's role, its coordinates in the job and in its role's world, and the bridge (if any)."""

    role: str
    job: DistEnv
    env: DistEnv
    bridge: Bridge | None


def join_role(plan: Plan) -> RoleWorld:
    """Read the job's coordinates, pick this rank's role from the plan, export its world's variables
    (RANK, WORLD_SIZE, MASTER_*: megatron and vLLM's external launcher read them) and build the bridge."""
    job = dist_env_from_environ()
    role = plan.role(job.rank)
    if role == "actor":
        first, size, port = 0, plan.actor_world, job.master_port + ACTOR_PORT
    else:
        ranks = plan.separate_engine_ranks(role)
        first, size, port = ranks[0], len(ranks), job.master_port + ENGINE_PORT
    env = role_env(job, first, size, rank_host(job, first), port)
    export_torch_env(env)
    separate = plan.separate_engine_ranks("rollout")
    bridge = None
    if separate:
        kind = pick_device("cuda" if plan.device == "gpu" else "cpu")
        device = torch.device("cuda", job.local_rank) if kind == "cuda" else torch.device("cpu")
        if kind == "cuda":
            torch.cuda.set_device(job.local_rank)
        bridge = Bridge(rank=job.rank, world=job.world_size, host=job.master_addr,
                        port=job.master_port + BRIDGE_PORT, weight_ranks=[0, *separate],
                        backend=backend_for(kind), device=device, timeout_s=plan.collective_timeout_s)
    return RoleWorld(role, job, env, bridge)
