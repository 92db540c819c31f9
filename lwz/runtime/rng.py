"""Every random-number generator's state (Python, NumPy, torch, CUDA when in use, megatron's tracker), for
checkpoints: a resumed run draws what the uninterrupted one would have."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["rng_states", "restore_rng_states"]


def rng_states() -> dict[str, Any]:
    """This process's generator states (picklable)."""
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "tracker": get_cuda_rng_tracker().get_states()}  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_states(state: dict[str, Any], with_tracker: bool) -> None:
    """Set the states `rng_states` returned; `with_tracker`: megatron's model-parallel tracker too."""
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if with_tracker:
        get_cuda_rng_tracker().set_states(state["tracker"])
