"""The GRPO loop, top to bottom: prompts -> rollout -> rewards -> advantages -> update -> sync -> log -> save.

Every rank runs this function (SPMD). Each rank holds its actor shard, its part of a rollout engine
and of a reward-model engine (vLLM, placed by the plan); each engine role spreads the step's work over
its engines and gathers the results on every rank, rewards and advantages are computed identically
everywhere, and each data-parallel rank updates on its share of each mini-batch. On a GPU the phases
take turns with the memory: the rollout engine sleeps (its weights dropped: they are replaced after
the update) before the reward model wakes, which sleeps again before the update.
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
from lwz.batch import RolloutBatch
from lwz.data.prompts import PromptOrder, fitting_prompts, recipe_prompts
from lwz.data.templates import render_prompt
from lwz.eval.during_training import evaluate_during_training
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rewards.compute import RewardMix
from lwz.rollout.role import EngineRole
from lwz.rollout.sync import push_weights
from lwz.rollout.vllm_engine import SamplingSettings, VllmEngine
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
    rollout = EngineRole.of("rollout", plan.engine("rollout").ranks)
    rewards = RewardMix.from_recipe(recipe, plan)  # builds this rank's reward-model engines
    start = 0
    if (checkpoint := latest_checkpoint(run_dir / "ckpt")) is not None:
        start = policy.load(checkpoint)["step"]
        push_weights(policy.hf_weights(), engine, SYNC_BUCKET_BYTES)
        log.info("resumed from %s at step %d", checkpoint, start)
    prompts = recipe_prompts(recipe)
    prompts = fitting_prompts(prompts, engine.tokenizer, recipe.rollout.template, recipe.rollout.max_prompt_tokens,
                              chat=recipe.rollout.chat_template)
    order = PromptOrder(len(prompts), recipe.schedule.prompts_per_step, recipe.schedule.seed, recipe.data.shuffle)
    r = recipe.rollout
    chat = engine.tokenizer if r.chat_template else None
    sampling = SamplingSettings(r.group_size, r.temperature, r.top_p, r.max_tokens, tuple(r.stop))
    dp_rank, dp = policy.dp_rank, plan.dp

    with Tracker(run_dir, recipe, enabled=rank0, resume_step=start + 1) as tracker:
        steps = tqdm(range(start, recipe.schedule.steps), initial=start, total=recipe.schedule.steps,
                     disable=not rank0, desc="grpo", unit="step", dynamic_ncols=True)
        for step in steps:
            times: dict[str, float] = {}
            with _timed(times, "rollout"):
                rows = [prompts[i] for i in order.indices(step)]
                texts = [render_prompt(row["prompt"], r.template, chat) for row in rows]
                seed = recipe.schedule.seed * 1_000_003 + step * 1_009
                groups = rollout.run(texts, lambda part, e: engine.generate(part, sampling, seed + e))
                batch = _to_batch(order.indices(step), rows, groups)
                engine.sleep(level=2)  # on GPU: the reward model and the update get the engine's memory
                release_memory()
            with _timed(times, "reward"):
                batch.rewards = rewards.score(batch.texts, batch.samples, [len(r) for r in batch.response_ids])
                batch.advantages = rewards.advantages(batch.rewards, batch.group)
                if recipe.algo.mask_truncated:
                    batch.loss_mask = [not cut for cut in batch.truncated]
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
            metrics = step_metrics(batch, rewards, updates, times, sync, epoch=order.epoch(step))
            if _should_eval(done, recipe):  # every rank generates; rank 0 writes RUN/eval/
                metrics.update(evaluate_during_training(engine, recipe, done, run_dir))
            tracker.log(done, metrics)
            tracker.log_samples(done, sample_rows(batch, recipe.logging.samples_per_step))
            if rank0:
                steps.write(format_step_line(done, recipe.schedule.steps, metrics))
            if _should_save(done, recipe):
                policy.save(checkpoint_folder(run_dir / "ckpt", done), {"step": done})
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


def _to_batch(indices: list[int], rows: list[dict], groups: list) -> RolloutBatch:
    """Flatten prompt groups into one batch (group g holds the completions of prompt g)."""
    flat = [(g, c) for g, group in enumerate(groups) for c in group]
    return RolloutBatch(prompt_index=[indices[g] for g, _ in flat], group=[g for g, _ in flat],
                        samples=[rows[g] for g, _ in flat], prompt_ids=[c.prompt_ids for _, c in flat],
                        response_ids=[c.response_ids for _, c in flat], texts=[c.text for _, c in flat],
                        truncated=[c.truncated for _, c in flat], rollout_logprobs=[c.logprobs for _, c in flat])


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
