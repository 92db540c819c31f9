"""The GRPO loop, top to bottom: prompts -> rollout -> rewards -> advantages -> update -> sync -> log -> save.

Every actor rank runs this function (SPMD). Each holds its actor shard, its shard of the writing reward
model (megatron-core on the actor's grid, in host memory outside the reward phase) and, colocated (the
paper's layout), its part of a rollout engine; the engines spread the step's work and gather the results
on every rank, rewards and advantages are computed identically everywhere, and each data-parallel rank
updates on its share of each mini-batch. The phases take turns with the GPU's memory as the GPU's rules
say (lwz/runtime/gpu_rules.py, kept on CPU too): the rollout engine sleeps before the reward model moves
onto the GPU, which leaves it before the update; the engine sleeps again for a checkpoint.

The rollout side (lwz.rollout.rollouts.Rollouts) hands each step its scored batch whatever the mode and
layout: one blocking generate, the partial rollout, one step ahead or async (`rollout.mode`), on the actor's
ranks or on engines of their own (`rollout.colocate`), with dynamic sampling's rounds when the recipe
asks (`algo.dynamic_sampling`), or a saved run's batches (`rollout.replay`). `logging.save_rollouts` keeps
each step's batch; `rollout.only` generates and scores without training.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from tqdm import tqdm

from lwz.actor.checkpoint import checkpoint_folder, latest_checkpoint, prune_checkpoints
from lwz.actor.policy import Policy
from lwz.actor.stage_run import due
from lwz.algo.scoring import BatchScorer
from lwz.eval.during_training import evaluate_during_training
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rewards.compute import RewardMix
from lwz.rollout.replay import save_rollout
from lwz.rollout.rollouts import build_rollouts
from lwz.runtime.device import host_peak_bytes, init_distributed
from lwz.runtime.roles import RoleWorld
from lwz.track import Tracker, format_step_line
from lwz.track.step_report import sample_rows, step_metrics

log = logging.getLogger(__name__)


def train(recipe: Recipe, plan: Plan, run_dir: Path, world: RoleWorld) -> None:
    """Run (or resume) the recipe's GRPO training in this actor rank."""
    runtime = init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed,
                               device="cuda" if plan.device == "gpu" else "cpu", env=world.env,
                               timeout_s=plan.collective_timeout_s)
    rank0 = runtime.rank == 0
    policy = Policy(recipe, plan)
    rewards = RewardMix.from_recipe(recipe, plan)  # this rank's shard of the reward model, in host memory
    score = BatchScorer(rewards, recipe.algo.mask_truncated)
    rollouts = build_rollouts(recipe, plan, world.bridge, distributed=runtime.world_size > 1)  # last: the most memory free
    start, extra = 0, None
    if (checkpoint := latest_checkpoint(run_dir / "ckpt")) is not None:
        extra = policy.load(checkpoint)
        start = extra["step"]
        log.info("resumed from %s at step %d", checkpoint, start)
    rollouts.resume(start, extra, policy.hf_weights)

    with Tracker(run_dir, recipe, enabled=rank0, resume_step=start + 1) as tracker:
        steps = tqdm(range(start, recipe.schedule.steps), initial=start, total=recipe.schedule.steps,
                     disable=not rank0, desc="grpo", unit="step", dynamic_ncols=True)
        for step in steps:
            times: dict[str, float] = {}
            with _timed(times, "rollout"):   # scoring included, taken out below
                batch, rollout_metrics = rollouts.next_batch(step, score)
            times["reward"], reward_spans = score.lap()
            times["rollout"] -= times["reward"]
            done = step + 1
            if recipe.logging.save_rollouts and rank0:
                save_rollout(run_dir, done, batch, rollout_metrics, rollouts.epoch(step))
            with _timed(times, "update"):
                updates = [] if recipe.rollout.only else policy.train_on(batch)
            with _timed(times, "sync"):   # rollout-only too: a colocated engine drops its weights while asleep
                sync = rollouts.sync_weights(policy.hf_weights, done)
            metrics = step_metrics(batch, rewards, updates, times, sync, epoch=rollouts.epoch(step),
                                   loss_tokens=0 if recipe.rollout.only else policy.loss_tokens(batch))
            metrics.update(rollout_metrics)
            metrics["time/reward_overlap"] = rollouts.generating(reward_spans)   # scored while engines generated
            metrics["memory/host_peak_gb"] = host_peak_bytes() / 1e9   # against the plan's host memory
            if _should_eval(done, recipe):  # every rank generates (colocated engines only: the plan says so)
                metrics.update(evaluate_during_training(rollouts.engine, recipe, done, run_dir))
            tracker.log(done, metrics)
            tracker.log_samples(done, sample_rows(batch, recipe.logging.samples_per_step))
            if rank0:
                steps.write(format_step_line(done, recipe.schedule.steps, metrics))
            if due(done, recipe.schedule.save_every, recipe.schedule.steps) and not recipe.rollout.only:
                with rollouts.asleep():  # nothing of the engines on the actor's GPU while it saves
                    policy.save(checkpoint_folder(run_dir / "ckpt", done), {"step": done, **rollouts.state()})
                if rank0:
                    prune_checkpoints(run_dir / "ckpt", keep=recipe.schedule.keep_checkpoints)
    if dist.is_initialized():
        dist.barrier()
    if rank0:
        log.info("run finished: %s", run_dir)


def _should_eval(done: int, recipe: Recipe) -> bool:
    every = recipe.schedule.eval_every
    return every > 0 and done % every == 0


@contextmanager
def _timed(times: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start
