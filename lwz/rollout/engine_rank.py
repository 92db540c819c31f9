"""A rank of rollout engines on GPUs of their own: its whole run (the actor's side is lwz/rollout/remote.py,
what they tell each other lwz/rollout/bridge_talk.py).

The engine ranks build their engines over their own world (with dummy weights: the actor's arrive before
the first step), generate each step's groups (the same StepRollout, prompts, seeds and per-engine split as
the colocated layout, so `sync` reproduces it), send the batch over the bridge from their first rank, and
take the actor's weights, one reload per engine per sync. On GPUs of their own the engines need no sleep
mode and stay awake. They run `lag` batches ahead of the actor (`rollout_lag`): the weights of step m + 1 - lag
are taken right after batch m is delivered, at that engine step. In `one_step_off` every token of a batch is
one update stale; in `async` the partial rollout's pool keeps generating across updates, its unfinished
samples continuing under each new version (an in-flight update), every token tagged with its version.
"""

from __future__ import annotations

import logging
import time

from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rollout.bridge_talk import Delivered, receive_start, receive_weights, rollout_lag, send_batch
from lwz.rollout.role import EngineRole
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
    rollout = StepRollout.build(recipe, plan.device, role, distributed=world.env.world_size > 1, dp=plan.dp)
    lag, steps = rollout_lag(recipe.rollout.mode, recipe.rollout.max_staleness), recipe.schedule.steps

    start = receive_start(bridge)
    if start.engine_state:
        rollout.load(start.engine_state)
    receive_weights(bridge, rollout.engine)
    # the weights' version; whether an update was taken since the last batch (on resume: the one just received)
    version, updated = start.start, start.engine_state is not None
    for step in range(start.delivered, steps):
        began, wall = time.perf_counter(), time.time()
        batch, metrics = rollout.collect(step, version)
        metrics["rollout/generate_s"] = time.perf_counter() - began
        metrics["rollout/inflight_updates"] = float(updated and metrics.get("rollout/carried_in", 0.0) > 0)
        delivered = Delivered(step, batch, metrics, rollout.epoch(step), rollout.state(), (wall, time.time()))
        send_batch(bridge, first, delivered if world.job.rank == first else None)
        due, updated = step + 1 - lag, False
        if start.start < due < steps:   # the actor's update on batch step - lag
            receive_weights(bridge, rollout.engine)
            version, updated = due, True
    log.info("rollout engines: run finished")
