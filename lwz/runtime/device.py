"""Where this process computes (cuda|cpu), how it talks (nccl|gloo), megatron's process groups."""

from __future__ import annotations

import datetime
import logging
import os
import random
from dataclasses import dataclass

import torch

from lwz.errors import LwzError
from lwz.launch.env import DistEnv, dist_env_from_environ
from lwz.launch.ports import bind_retrying

__all__ = [
    "Runtime",
    "pick_device",
    "on_gpu",
    "backend_for",
    "init_distributed",
    "init_engine_world",
    "destroy_distributed",
    "release_memory",
    "host_peak_bytes",
    "seed_everything",
]

log = logging.getLogger(__name__)

DEVICE_ENV = "LWZ_DEVICE"  # "cpu" forces the CPU path on a GPU machine


@dataclass(frozen=True)
class Runtime:
    """This process's device and place in the job and in megatron's model-parallel grid."""

    device: torch.device
    backend: str
    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    cp: int

    @property
    def dp(self) -> int:
        """Data-parallel size: the ranks left over after TP x PP x CP."""
        return self.world_size // (self.tp * self.pp * self.cp)


def pick_device(device: str | None = None) -> str:
    """'cuda' when a GPU is visible, else 'cpu'; `device` or $LWZ_DEVICE overrides."""
    choice = (
        device or os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if choice not in ("cpu", "cuda"):
        raise LwzError(
            DEVICE_ENV if not device else None, "device", f"'{choice}' is not cpu or cuda"
        )
    if choice == "cuda" and not torch.cuda.is_available():
        raise LwzError(None, "device", "cuda was asked for but no GPU is visible")
    return choice


def on_gpu() -> bool:
    """Whether models live on a GPU: CUDA is visible and the CPU shims were not applied."""
    from lwz.runtime.cpu_shims import cpu_shims_applied

    return torch.cuda.is_available() and not cpu_shims_applied()


def engine_device() -> str:
    """The `device` of a stand-alone vLLM engine (eval, annotation): "gpu" when CUDA is visible, else "cpu"."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def backend_for(device: str) -> str:
    """The torch.distributed backend for a device type: nccl on GPUs, gloo on CPUs."""
    return "nccl" if device == "cuda" else "gloo"


def init_distributed(
    tp: int = 1,
    pp: int = 1,
    cp: int = 1,
    *,
    seed: int = 0,
    device: str | None = None,
    env: DistEnv | None = None,
    timeout_s: float = 1800,
) -> Runtime:
    """Join the job (torchrun/SLURM/single-process env), build megatron's groups, seed every RNG.

    On the CPU path megatron-core's CPU shims are applied first. An existing process group is
    reused; existing model-parallel groups must have the same sizes (after
    `parallel_state.destroy_model_parallel()` a call builds groups of new sizes). A collective that waits
    longer than `timeout_s` (the plan's `collective_timeout_s` in a run) fails the rank.
    """
    from megatron.core import parallel_state

    env = env or dist_env_from_environ()
    if env.world_size % (tp * pp * cp):
        raise LwzError(
            None, "actor", f"tp*pp*cp = {tp * pp * cp} does not divide {env.world_size} ranks"
        )
    kind = pick_device(device)
    if kind == "cuda":
        torch.cuda.set_device(env.local_rank)
        torch_device = torch.device("cuda", env.local_rank)
    else:
        from lwz.runtime.cpu_shims import apply_cpu_shims

        apply_cpu_shims()
        torch_device = torch.device("cpu")
    backend = backend_for(kind)
    if not torch.distributed.is_initialized():
        _join_world(env, backend, timeout_s)
    if parallel_state.model_parallel_is_initialized():
        sizes = (
            parallel_state.get_tensor_model_parallel_world_size(),
            parallel_state.get_pipeline_model_parallel_world_size(),
            parallel_state.get_context_parallel_world_size(),
        )
        assert sizes == (tp, pp, cp), f"model parallel already initialised as {sizes}"
    else:
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp,
            pipeline_model_parallel_size=pp,
            context_parallel_size=cp,
            distributed_timeout_minutes=timeout_s / 60,
        )
    seed_everything(seed)
    runtime = Runtime(torch_device, backend, env.rank, env.world_size, env.local_rank, tp, pp, cp)
    log.info(
        "rank %d/%d on %s (%s), tp=%d pp=%d cp=%d dp=%d",
        env.rank,
        env.world_size,
        torch_device,
        backend,
        tp,
        pp,
        cp,
        runtime.dp,
    )
    return runtime


def init_engine_world(env: DistEnv, device: str, timeout_s: float = 1800) -> None:
    """An engine group on GPUs of its own: its ranks' default process group (vLLM's external launcher runs
    its engines over it; one rank alone needs none). No megatron groups: these ranks hold no actor."""
    kind = pick_device(device)
    if kind == "cuda":
        torch.cuda.set_device(env.local_rank)
    if env.world_size > 1 and not torch.distributed.is_initialized():
        _join_world(env, backend_for(kind), timeout_s)


def _join_world(env: DistEnv, backend: str, timeout_s: float) -> None:
    """The default process group over the world's rendezvous port (rank 0 waits out a port in use)."""
    address = f"{env.master_addr}:{env.master_port}"
    bind_retrying(lambda: torch.distributed.init_process_group(
        backend=backend, init_method=f"tcp://{address}", rank=env.rank, world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s)), f"the rendezvous on {address}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and megatron's model-parallel RNG tracker.

    Data-parallel ranks share `seed`; TP ranks get distinct tracker states (megatron's scheme).
    """
    import numpy as np
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if parallel_state.model_parallel_is_initialized():
        model_parallel_cuda_manual_seed(seed, force_reset_rng=True)


def host_peak_bytes() -> int:
    """This process's peak resident host memory so far (Linux `ru_maxrss`, in KiB there)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_memory() -> None:
    """Between phases on a GPU: hand the caching allocator's free blocks back, so that the next phase's
    engine (which allocates outside torch's allocator) finds the memory the plan gave it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def destroy_distributed() -> None:
    """Tear down megatron's groups and the default process group (for tests and clean exits)."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
