"""A rank of rollout engines on GPUs of their own: its whole run (the actor's side is lwz/rollout/remote.py,
what they tell each other lwz/rollout/bridge_talk.py).

The engine ranks build their engines over their own world (with dummy weights: the actor's arrive before
the first step), generate each step's groups (the same StepRollout, prompts, seeds and per-engine split as
the colocated layout, so `sync` reproduces it), send the batch over the bridge from their first rank, and
take the actor's weights, one reload per engine per sync. On GPUs of their own the engines need no sleep
mode and stay awake. In `one_step_off` the batch of step n + 1 is generated before the weights of step n + 1
arrive: it is marked one update stale (every token; the loss weighs it against the engine's logprobs).
"""

from __future__ import annotations

import logging
import time

from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rollout.role import EngineRole
from lwz.rollout.bridge_talk import receive_start, receive_weights, send_batch
from lwz.rollout.step_rollout import StepRollout
from lwz.runtime.device import init_engine_world
from lwz.runtime.roles import RoleWorld

__all__ = ["serve_rollout"]

log = logging.getLogger(__name__)


def serve_rollout(recipe: Recipe, plan: Plan, world: RoleWorld) -> None:
    """Generate every step's batch for the actor and take its weights after each update, until the run ends."""
    bridge = world.bridge
    assert bridge is not None, "an engine rank is on the bridge"
    init_engine_world(world.env, "cuda" if plan.device == "gpu" else "cpu", timeout_s=plan.collective_timeout_s)
    first = plan.separate_engine_ranks("rollout")[0]
    role = EngineRole.of("rollout", [[r - first for r in ranks] for ranks in plan.engine("rollout").ranks])
    rollout = StepRollout.build(recipe, plan.device, role, distributed=world.env.world_size > 1)
    one_step_off, steps = recipe.rollout.mode == "one_step_off", recipe.schedule.steps

    start, ahead = receive_start(bridge)
    version = start          # updates behind the engine's weights
    receive_weights(bridge, rollout.engine)
    for step in range(start + ahead, steps):
        began = time.perf_counter()
        batch, metrics = rollout.collect(step)
        metrics["rollout/generate_s"] = time.perf_counter() - began
        metrics["rollout/staleness"] = float(step - version)
        if step > version:
            batch.stale_tokens = [len(r) for r in batch.response_ids]
        send_batch(bridge, first, (step, batch, metrics, rollout.epoch(step)) if world.job.rank == first else None)
        # the actor sends weights after each update it makes in this session but the last
        if (step - start >= 1) if one_step_off else step + 1 < steps:
            receive_weights(bridge, rollout.engine)
            version = step if one_step_off else step + 1
    log.info("rollout engines: run finished")
