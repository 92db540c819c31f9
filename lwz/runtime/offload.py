"""A frozen model's weights in host memory outside its phase (the reward model beside the actor).

On a GPU the parameters point at pinned host copies between phases and at device copies inside one
(`on_gpu`); the host copies are the weights, so moving off the GPU copies nothing back. On CPU the host
copy is the parameter itself and nothing moves; either way the move is reported to the GPU's rules
(`lwz.runtime.gpu_rules`): a model moves onto the GPU only while no engine there is awake, and the actor
updates and saves only while no such model is on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lwz.runtime.device import release_memory
from lwz.runtime.gpu_rules import gpu_rules

__all__ = ["HostOffloaded"]


class HostOffloaded:
    """The parameters of `module` (frozen), kept in host memory; `name` is how the rules call it."""

    def __init__(self, module: torch.nn.Module, name: str):
        self.name = name
        self._params = list(module.parameters())
        assert not any(p.requires_grad for p in self._params), f"{name}: only frozen weights move to the host"
        self.device = self._params[0].device
        on_device = self.device.type != "cpu"
        self._host = [p.data.to("cpu").pin_memory() if on_device else p.data for p in self._params]
        self._point_at(self._host)
        release_memory()

    @contextmanager
    def on_gpu(self, phase: str) -> Iterator[None]:
        """The weights on the model's device for the duration of `phase`, back in host memory after it."""
        gpu_rules().model_to_gpu(self.name, phase)
        try:
            self._point_at([t.to(self.device, non_blocking=True) for t in self._host])
            yield
        finally:
            self._point_at(self._host)
            gpu_rules().model_off_gpu(self.name)
            release_memory()

    def _point_at(self, tensors: list[torch.Tensor]) -> None:
        for param, tensor in zip(self._params, tensors):
            param.data = tensor
