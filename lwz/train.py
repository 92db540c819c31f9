"""The GRPO loop, top to bottom: prompts -> rollout -> rewards -> advantages -> update -> sync -> log -> save.

Every actor rank runs this function (SPMD). Each holds its actor shard, its shard of the writing reward
model (megatron-core on the actor's grid, in host memory outside the reward phase) and, colocated (the
paper's layout), its part of a rollout engine; the engines spread the step's work and gather the results
on every rank, rewards and advantages are computed identically everywhere, and each data-parallel rank
updates on its share of each mini-batch. The phases take turns with the GPU's memory as the GPU's rules
say (lwz/runtime/gpu_rules.py, kept on CPU too): the rollout engine sleeps before the reward model moves
onto the GPU, which leaves it before the update; the engine sleeps again for a checkpoint. The rollout side (lwz/rollout/colocated.py, or remote.py for engines on GPUs of their own,
`rollout.colocate: false`) gives each step's batch: one blocking generate, the partial rollout, or one
step ahead (`rollout.mode`); dynamic sampling (`algo.dynamic_sampling`) adds rounds of it until the batch
has groups with signal.
"""

from __future__ import annotations

import itertools
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from tqdm import tqdm

from lwz.actor.checkpoint import checkpoint_folder, latest_checkpoint, prune_checkpoints
from lwz.actor.policy import Policy
from lwz.algo.dynamic_sampling import fill_with_signal
from lwz.batch import RolloutBatch
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rewards.compute import RewardMix
from lwz.rollout.colocated import ColocatedRollouts
from lwz.rollout.remote import RemoteRollouts
from lwz.runtime.device import host_peak_bytes, init_distributed, release_memory
from lwz.runtime.roles import RoleWorld
from lwz.step_report import sample_rows, step_metrics
from lwz.track import Tracker, format_step_line

log = logging.getLogger(__name__)


def train(recipe: Recipe, plan: Plan, run_dir: Path, world: RoleWorld) -> None:
    """Run (or resume) the recipe's GRPO training in this actor rank."""
    runtime = init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed,
                               device="cuda" if plan.device == "gpu" else "cpu", env=world.env,
                               timeout_s=plan.collective_timeout_s)
    rank0 = runtime.rank == 0
    policy = Policy(recipe, plan)
    rewards = RewardMix.from_recipe(recipe, plan)  # this rank's shard of the reward model, in host memory
    rollouts = RemoteRollouts(recipe, plan, world.bridge) if world.bridge is not None else \
        ColocatedRollouts(recipe, plan, distributed=runtime.world_size > 1)  # built last: the most memory free
    start, extra = 0, None
    if (checkpoint := latest_checkpoint(run_dir / "ckpt")) is not None:
        extra = policy.load(checkpoint)
        start = extra["step"]
        log.info("resumed from %s at step %d", checkpoint, start)
    rollouts.begin(start, extra, policy.hf_weights)
    dp_rank, dp = policy.dp_rank, plan.dp
    dynamic = recipe.algo.dynamic_sampling

    def score(batch: RolloutBatch) -> RolloutBatch:
        batch.rewards = rewards.score(batch.texts, batch.samples, [len(r) for r in batch.response_ids])
        batch.advantages = rewards.advantages(batch.rewards, batch.group)
        if recipe.algo.mask_truncated:
            batch.loss_mask = [not cut for cut in batch.truncated]
        return batch

    with Tracker(run_dir, recipe, enabled=rank0, resume_step=start + 1) as tracker:
        steps = tqdm(range(start, recipe.schedule.steps), initial=start, total=recipe.schedule.steps,
                     disable=not rank0, desc="grpo", unit="step", dynamic_ncols=True)
        for step in steps:
            times: dict[str, float] = {}
            with _timed(times, "rollout"):
                batch, rollout_metrics = rollouts.collect(step)
            with _timed(times, "reward"):
                score(batch)
            if dynamic:
                with _timed(times, "resample"):
                    rounds = itertools.count(1)

                    def more(groups: int) -> RolloutBatch:
                        return score(rollouts.more(step, groups, next(rounds)))

                    batch, resampled = fill_with_signal(batch, more, recipe.schedule.prompts_per_step,
                                                        recipe.algo.max_sampling_rounds)
                    rollout_metrics.update(resampled.metrics())
            with _timed(times, "update"):
                shards = [mb.shard(dp_rank, dp) for mb in batch.chunks(recipe.algo.mini_batches)]
                for shard in shards:
                    if policy.needs_old_logprobs:
                        shard.old_logprobs = policy.compute_logprobs(shard)
                    if recipe.algo.kl_coef > 0:
                        shard.ref_logprobs = policy.compute_logprobs(shard, reference=True)
                updates = [policy.update(shard) for _ in range(recipe.algo.epochs) for shard in shards]
                release_memory()
            done = step + 1
            with _timed(times, "sync"):
                sync = rollouts.push(policy.hf_weights, done)
            metrics = step_metrics(batch, rewards, updates, times, sync, epoch=rollouts.epoch(step))
            metrics.update(rollout_metrics)
            metrics["memory/host_peak_gb"] = host_peak_bytes() / 1e9   # against the plan's host memory
            if _should_eval(done, recipe):  # every rank generates; rank 0 writes RUN/eval/
                metrics.update(rollouts.evaluate(done, run_dir))
            tracker.log(done, metrics)
            tracker.log_samples(done, sample_rows(batch, recipe.logging.samples_per_step))
            if rank0:
                steps.write(format_step_line(done, recipe.schedule.steps, metrics))
            if _should_save(done, recipe):
                with rollouts.asleep():  # nothing of the engines on the actor's GPU while it saves
                    policy.save(checkpoint_folder(run_dir / "ckpt", done), {"step": done, **rollouts.state()})
                if rank0:
                    prune_checkpoints(run_dir / "ckpt", keep=recipe.schedule.keep_checkpoints)
    if dist.is_initialized():
        dist.barrier()
    if rank0:
        log.info("run finished: %s", run_dir)


def _should_save(done: int, recipe: Recipe) -> bool:
    every = recipe.schedule.save_every
    return done == recipe.schedule.steps or (every > 0 and done % every == 0)


def _should_eval(done: int, recipe: Recipe) -> bool:
    every = recipe.schedule.eval_every
    return every > 0 and done % every == 0


@contextmanager
def _timed(times: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start
