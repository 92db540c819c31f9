"""Make megatron-core run on CPU processes (gloo): the few CUDA assumptions it makes, patched.

Applied only when no GPU is used (`apply_cpu_shims()` is idempotent):
- the model-parallel RNG tracker keeps CPU `torch.Generator` states and forks the CPU generator;
- `torch.cuda.current_device()` returns "cpu" (megatron allocates buffers on it);
- a `TorchFunctionMode` rewrites `device="cuda"`, `.cuda()` and `.to("cuda")` to the CPU, and
  reports CPU tensors' `Tensor.type()` as "torch.cuda.*" (asserted by grad clipping and the
  distributed optimizer);
- `torch.cuda.synchronize`, streams and events are no-ops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["apply_cpu_shims", "cpu_shims_applied", "shims_suspended"]

log = logging.getLogger(__name__)

_APPLIED = False
_MODE: TorchFunctionMode | None = None


def cpu_shims_applied() -> bool:
    """Whether `apply_cpu_shims()` has run in this process."""
    return _APPLIED


def apply_cpu_shims() -> None:
    """Patch torch.cuda and megatron-core so that megatron-core runs on the CPU. Idempotent.

    The device-rewriting mode is entered on the calling thread (call this from the main thread).
    """
    global _APPLIED, _MODE
    if _APPLIED:
        return
    _patch_torch_cuda()
    _patch_megatron_rng()
    _MODE = _CudaToCpuMode()
    _MODE.__enter__()
    _APPLIED = True
    log.debug("megatron-core CPU shims applied")


@contextlib.contextmanager
def shims_suspended() -> Iterator[None]:
    """Run a block without the device-rewriting mode, for code that never asks for CUDA (vLLM's CPU
    backend): under the mode every torch call pays for a Python dispatch (~6% of a CPU rollout)."""
    stack = torch.overrides._get_current_function_mode_stack()
    if _MODE is None or not stack or stack[-1] is not _MODE:
        yield
        return
    with torch.overrides._pop_mode_temporarily():
        yield


def _is_cuda(device: object) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return False


class _CudaToCpuMode(TorchFunctionMode):
    """Sends every tensor that code asks to place on a CUDA device to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if _is_cuda(kwargs.get("device")):
            kwargs = {**kwargs, "device": "cpu"}
        if func is torch.Tensor.to:
            args = tuple("cpu" if _is_cuda(a) else a for a in args)
        result = func(*args, **kwargs)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs and isinstance(result, str):
            if result.startswith("torch.") and not result.startswith("torch.cuda."):
                return "torch.cuda." + result[len("torch.") :]
        return result


class _NoOpEvent:
    def __init__(self, *args, **kwargs):
        pass

    def record(self, *args, **kwargs) -> None:
        pass

    def wait(self, *args, **kwargs) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, other) -> float:
        return 0.0


class _NoOpStream(contextlib.nullcontext):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def wait_stream(self, *args, **kwargs) -> None:
        pass

    def wait_event(self, *args, **kwargs) -> None:
        pass

    def record_event(self, event=None):
        return event or _NoOpEvent()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: "cpu"
    cuda.synchronize = lambda device=None: None
    cuda.current_stream = lambda device=None: _NoOpStream()
    cuda.default_stream = lambda device=None: _NoOpStream()
    cuda.stream = lambda stream=None: contextlib.nullcontext()
    cuda.Stream = _NoOpStream
    cuda.Event = _NoOpEvent


def _patch_megatron_rng() -> None:
    """Replace megatron's CUDA RNG tracker with one over the CPU default generator."""
    from megatron.core.tensor_parallel import random as mp_random

    class CpuRNGStatesTracker(mp_random.CudaRNGStatesTracker):
        """Named RNG states for the CPU default generator (dropout/init inside TP regions)."""

        def add(self, name: str, seed: int) -> None:
            self._is_initialized = True
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            if name in self.states_:
                raise Exception(f"rng state {name} already exists")
            self.seeds_.add(seed)
            self.states_[name] = torch.Generator().manual_seed(seed).get_state()

        @contextlib.contextmanager
        def fork(self, name: str = mp_random._MODEL_PARALLEL_RNG_TRACKER_NAME):
            if name not in self.states_:
                raise Exception(f"rng state {name} is not added")
            outer = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(outer)

    def initialize_rng_tracker(*args, force_reset: bool = False, **kwargs) -> None:
        if mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED and not force_reset:
            return
        mp_random._CUDA_RNG_STATE_TRACKER = CpuRNGStatesTracker()
        mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True

    mp_random.initialize_rng_tracker = initialize_rng_tracker
    mp_random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda new_state, *args, **kwargs: torch.set_rng_state(
        new_state
    )
    mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = False
    initialize_rng_tracker()
