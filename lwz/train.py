"""The GRPO loop, top to bottom: prompts -> rollout -> rewards -> advantages -> update -> sync -> log -> save.

Every rank runs this function (SPMD). Each rank holds its actor shard, its part of a rollout engine
and of a reward-model engine (vLLM, placed by the plan); each engine role spreads the step's work over
its engines and gathers the results on every rank, rewards and advantages are computed identically
everywhere, and each data-parallel rank updates on its share of each mini-batch. On a GPU the phases
take turns with the memory: the rollout engine sleeps (its weights dropped: they are replaced after
the update) before the reward model wakes, which sleeps again before the update. The rollout is one
blocking generate per step or the partial rollout (`rollout.mode`, lwz/rollout/step_rollout.py);
dynamic sampling (`algo.dynamic_sampling`) adds rounds of it until the batch has groups with signal.
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
from lwz.data.prompts import fitting_prompts, recipe_prompts
from lwz.eval.during_training import evaluate_during_training
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rewards.compute import RewardMix
from lwz.rollout.role import EngineRole
from lwz.rollout.step_rollout import StepRollout
from lwz.rollout.sync import push_weights
from lwz.rollout.vllm_engine import VllmEngine
from lwz.runtime.device import init_distributed, release_memory
from lwz.step_report import sample_rows, step_metrics
from lwz.track import Tracker, format_step_line

log = logging.getLogger(__name__)
SYNC_BUCKET_BYTES = 256 << 20


def train(recipe: Recipe, plan: Plan, run_dir: Path) -> None:
    """Run (or resume) the recipe's GRPO training in this process's rank."""
    runtime = init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed,
                               device="cuda" if plan.device == "gpu" else "cpu")
    rank0 = runtime.rank == 0
    policy = Policy(recipe, plan)
    engine = _engine(recipe, plan, distributed=runtime.world_size > 1)
    rewards = RewardMix.from_recipe(recipe, plan)  # builds this rank's reward-model engines
    r = recipe.rollout
    prompts = fitting_prompts(recipe_prompts(recipe), engine.tokenizer, r.template, r.max_prompt_tokens,
                              chat=r.chat_template)
    rollout = StepRollout(recipe, engine, EngineRole.of("rollout", plan.engine("rollout").ranks), prompts)
    start = 0
    if (checkpoint := latest_checkpoint(run_dir / "ckpt")) is not None:
        extra = policy.load(checkpoint)
        start = extra["step"]
        rollout.load(extra)
        push_weights(policy.hf_weights(), engine, SYNC_BUCKET_BYTES)
        log.info("resumed from %s at step %d", checkpoint, start)
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
                batch, rollout_metrics = rollout.collect(step)
                # on GPU the reward model and the update get the engine's memory; its weights are dropped
                # (they are replaced after the update) unless dynamic sampling may need more rounds
                engine.sleep(level=1 if dynamic else 2)
                release_memory()
            with _timed(times, "reward"):
                score(batch)
            if dynamic:
                with _timed(times, "resample"):
                    rounds = itertools.count(1)

                    def more(groups: int) -> RolloutBatch:
                        engine.wake_up()
                        extra_groups = rollout.more(step, groups, next(rounds))
                        engine.sleep(level=1)
                        return score(extra_groups)

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
            with _timed(times, "sync"):
                engine.wake_up()  # weights go into an awake engine, which then serves eval and the next rollout
                sync = push_weights(policy.hf_weights(), engine, SYNC_BUCKET_BYTES)
            done = step + 1
            metrics = step_metrics(batch, rewards, updates, times, sync, epoch=rollout.epoch(step))
            metrics.update(rollout_metrics)
            if _should_eval(done, recipe):  # every rank generates; rank 0 writes RUN/eval/
                metrics.update(evaluate_during_training(engine, recipe, done, run_dir))
            tracker.log(done, metrics)
            tracker.log_samples(done, sample_rows(batch, recipe.logging.samples_per_step))
            if rank0:
                steps.write(format_step_line(done, recipe.schedule.steps, metrics))
            if _should_save(done, recipe):
                policy.save(checkpoint_folder(run_dir / "ckpt", done), {"step": done, **rollout.state()})
                if rank0:
                    prune_checkpoints(run_dir / "ckpt", keep=recipe.schedule.keep_checkpoints)
    if dist.is_initialized():
        dist.barrier()
    if rank0:
        log.info("run finished: %s", run_dir)


def _engine(recipe: Recipe, plan: Plan, distributed: bool) -> VllmEngine:
    r = recipe.rollout
    return VllmEngine(recipe.model.path, tokenizer=recipe.model.tokenizer, device=plan.device, tp=r.tp,
                      dtype=recipe.model.dtype, seed=recipe.schedule.seed,
                      max_model_len=r.max_prompt_tokens + r.max_tokens,
                      gpu_memory_utilization=r.gpu_memory_utilization, distributed=distributed)


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
