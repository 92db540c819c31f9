"""Each in-process vLLM engine keeps its own model-parallel groups.

vLLM holds its tensor/pipeline/data-parallel groups in module globals and refuses a second engine of
another TP size in the same process. The loop's engines (the rollout engine, a reward-model engine)
live in every rank's process (SPMD, `external_launcher`), each over the TP groups the plan gives it.
vLLM's layers look their group up at call time (`get_tp_group()`), so an engine computes correctly
whenever its own groups are installed: `build_with_own_groups` builds an engine on fresh groups and
keeps them, and `with groups.active():` installs them around each call into that engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from lwz.runtime.cpu_shims import shims_suspended

__all__ = ["EngineGroups", "build_with_own_groups"]

T = TypeVar("T")
# vLLM's per-engine group globals (the world group is shared by all engines of the process).
_GROUP_GLOBALS = ("_TP", "_ETP", "_ENGRAM_DP", "_DCP", "_PCP", "_PP", "_DP", "_EP", "_EPLB")


def _state() -> dict[str, Any]:
    from vllm.distributed import parallel_state

    return {name: getattr(parallel_state, name) for name in _GROUP_GLOBALS if hasattr(parallel_state, name)}


def _install(state: dict[str, Any]) -> None:
    from vllm.distributed import parallel_state

    for name, group in state.items():
        setattr(parallel_state, name, group)


class EngineGroups:
    """The groups one engine was built over."""

    def __init__(self, state: dict[str, Any]):
        self._state = state

    @contextmanager
    def active(self) -> Iterator[None]:
        """Install this engine's groups for the duration of a call, then put back what was there; the
        call runs without the actor's CPU device shims (vLLM's CPU backend needs none)."""
        previous = _state()
        _install(self._state)
        try:
            with shims_suspended():
                yield
        finally:
            _install(previous)


def build_with_own_groups(build: Callable[[], T]) -> tuple[T, EngineGroups]:
    """`build()` an engine on fresh vLLM groups (it creates them collectively, as vLLM does for the first
    engine of a process); returns it and its groups, with the previously installed groups put back."""
    previous = _state()
    _install({name: None for name in previous})
    try:
        engine = build()
        return engine, EngineGroups(_state())
    finally:
        _install(previous)
