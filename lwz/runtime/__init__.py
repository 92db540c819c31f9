"""Hardware in one place: device and process groups (`device`), megatron on CPU (`cpu_shims`), generator
states for checkpoints (`rng`), the worlds of the plan's roles (`roles`) and the groups that join them
(`bridge`)."""

from lwz.runtime.cpu_shims import apply_cpu_shims, cpu_shims_applied
from lwz.runtime.device import (
    Runtime,
    backend_for,
    destroy_distributed,
    init_distributed,
    pick_device,
    release_memory,
    seed_everything,
)

__all__ = [
    "Runtime",
    "apply_cpu_shims",
    "backend_for",
    "cpu_shims_applied",
    "destroy_distributed",
    "init_distributed",
    "pick_device",
    "release_memory",
    "seed_everything",
]
