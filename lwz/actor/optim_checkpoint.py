"""Loading megatron's distributed optimizer from a `fully_reshardable` checkpoint with torch's Adam.

Without TE or Apex, megatron-core 0.16 runs its distributed optimizer on `torch.optim.Adam`, which
keeps a `step` tensor per parameter; three paths of its load assume a fused Adam and fail:
- `sharded_state_dict(is_loading=True)` calls `state_dict()`, which asserts one `step` over the
  inner states, so a fresh (never stepped) optimizer cannot build its load template;
- `load_parameter_state_from_fully_reshardable` skips `step` in the source but copies every key
  of the destination state, `step` included (a `KeyError`);
- `load_state_dict` gives every parameter the same `step` tensor, which Adam then increments once
  per parameter and step, so every update after a resume has the wrong bias correction.
`prepare_for_load` and `load_optimizer` work around them and leave other optimizers to megatron.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["prepare_for_load", "load_optimizer"]


def _torch_adam_distributed(optimizer) -> list:
    """The distributed optimizers in `optimizer` (chained or not) that run on torch's own Adam."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    parts = getattr(optimizer, "chained_optimizers", [optimizer])
    return [p for p in parts if isinstance(p, DistributedOptimizer) and isinstance(p.optimizer, torch.optim.Adam)]


def prepare_for_load(optimizer) -> None:
    """Give a never-stepped optimizer zero Adam states at step 0, so it can build its load template."""
    for part in _torch_adam_distributed(optimizer):
        inner = part.optimizer
        for group in inner.param_groups:
            for param in group["params"]:
                if param not in inner.state:
                    inner.state[param] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(param),
                                          "exp_avg_sq": torch.zeros_like(param)}  # fmt: skip


def load_optimizer(optimizer, state: dict[str, Any]) -> None:
    """Load a `dist_checkpointing.load` result into `optimizer`, one `step` tensor per parameter."""
    parts = _torch_adam_distributed(optimizer)
    if not parts:
        optimizer.load_state_dict(state)
        return
    assert len(getattr(optimizer, "chained_optimizers", [optimizer])) == 1, "one optimizer (no MoE or frozen groups)"
    part = parts[0]
    rest = dict(state)
    param_state = rest.pop("param_state")
    assert rest.pop("param_state_sharding_type") == "fully_reshardable"
    part.load_state_dict(rest)  # hyper-parameters and the saved step (one tensor, shared)
    inner_states = list(part.optimizer.state.values())
    steps = [s.pop("step") for s in inner_states]
    part.load_parameter_state_from_fully_reshardable(param_state)
    for s, step in zip(inner_states, steps):
        s["step"] = step.detach().clone()
