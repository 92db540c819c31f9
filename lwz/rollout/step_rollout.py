"""A step's rollout in the recipe's mode, two sources of groups: one blocking generate (`BlockingStepRollout`)
or the partial rollout's pool (`PartialStepRollout`).

`collect(step)` gives the step's prompt groups as a batch with the rollout metrics; the partial rollout's
`more(step, n, round)` another n groups of the same step (dynamic sampling's extra rounds); `state()` is
what a checkpoint keeps (the partial rollout's pool and prompt-stream position) and `load` restores it.
"""

from __future__ import annotations

from collections.abc import Sequence

from lwz.batch import RolloutBatch
from lwz.data.prompts import PromptOrder, fitting_prompts, recipe_prompts
from lwz.data.templates import render_prompt
from lwz.plan.resolve import batch_unit
from lwz.recipe.schema import Recipe
from lwz.rollout.partial import PartialRollout, expected_tokens, groups_to_batch, sync_round_metrics
from lwz.rollout.role import EngineRole
from lwz.engines.vllm_engine import SamplingSettings, VllmEngine

__all__ = ["BlockingStepRollout", "PartialStepRollout", "StepRollout", "rollout_engine"]


class StepRollout:
    """The rollout engines' side of each step, identical on every rank; `build` picks the recipe's mode."""

    def __init__(self, recipe: Recipe, engine: VllmEngine, role: EngineRole, prompts: Sequence[dict]):
        r = recipe.rollout
        self.engine, self.role, self.prompts = engine, role, prompts
        self.template, self.chat = r.template, engine.tokenizer if r.chat_template else None
        self.seed = recipe.schedule.seed
        self.sampling = SamplingSettings(r.group_size, r.temperature, r.top_p, r.max_tokens, tuple(r.stop))
        self.order = PromptOrder(len(prompts), recipe.schedule.prompts_per_step, recipe.schedule.seed,
                                 recipe.data.shuffle)

    @staticmethod
    def build(recipe: Recipe, device: str, role: EngineRole, distributed: bool, dp: int) -> StepRollout:
        """This rank's rollout engine (built with dummy weights: the first sync fills it), the recipe's
        prompts that fit it, and the rollout of the recipe's mode over them (`dp`: the actor's data-parallel
        size, which a batch must divide across)."""
        r = recipe.rollout
        engine = rollout_engine(recipe, device, distributed)
        prompts = fitting_prompts(recipe_prompts(recipe), engine.tokenizer, r.template, r.max_prompt_tokens,
                                  chat=r.chat_template)
        if r.mode in ("partial", "async"):
            return PartialStepRollout(recipe, engine, role, prompts, dp)
        return BlockingStepRollout(recipe, engine, role, prompts)

    def collect(self, step: int, version: int | None = None) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's groups (unscored) and the rollout metrics; the engine holds the weights after `version`
        updates (default `step`: the colocated layout), the policy version of the tokens sampled now."""
        raise NotImplementedError

    def epoch(self, step: int) -> int:
        """The data epoch the step's (last) prompts came from."""
        raise NotImplementedError

    def state(self) -> dict[str, str]:
        """What a checkpoint keeps (`load` restores it)."""
        return {}

    def load(self, extra: dict) -> None:
        """Restore `state()` from a checkpoint's extra."""

    def _seed(self, step: int, round_: int) -> int:
        return self.seed * 1_000_003 + step * 1_009 + round_ * 7_919

    def _render(self, index: int) -> str:
        return render_prompt(self.prompts[index]["prompt"], self.template, self.chat)


class BlockingStepRollout(StepRollout):
    """`rollout.mode: sync` (and the engines' side of `one_step_off`): the step's prompts, one blocking
    generate; the step ends with its slowest sample."""

    def collect(self, step: int, version: int | None = None) -> tuple[RolloutBatch, dict[str, float]]:
        seed, indices = self._seed(step, 0), self.order.indices(step)
        rows = [self.prompts[i] for i in indices]
        texts = [self._render(i) for i in indices]
        groups = self.role.run(texts, lambda part, e: self.engine.generate(part, self.sampling, seed + e))
        batch = _to_batch(indices, rows, groups)
        version = step if version is None else version
        batch.versions = [[version] * len(r) for r in batch.response_ids]
        lag = step - version
        if lag:
            batch.stale_tokens = [len(r) for r in batch.response_ids]
        return batch, {**sync_round_metrics(batch, len(self.role.engine_ranks)), "rollout/staleness": float(lag)}

    def epoch(self, step: int) -> int:
        return self.order.epoch(step)


class PartialStepRollout(StepRollout):
    """`rollout.mode: partial` and `async`: the step ends when enough groups are complete (lwz.rollout.partial);
    its pool and prompt-stream position go into the checkpoint."""

    def __init__(self, recipe: Recipe, engine: VllmEngine, role: EngineRole, prompts: Sequence[dict], dp: int):
        super().__init__(recipe, engine, role, prompts)
        r = recipe.rollout
        self.max_tokens = r.max_tokens
        self.partial = PartialRollout(recipe.schedule.prompts_per_step, r.group_size, r.over_sample, r.max_staleness,
                                      batch_unit(r.group_size, recipe.algo.mini_batches, dp))

    def collect(self, step: int, version: int | None = None) -> tuple[RolloutBatch, dict[str, float]]:
        version = step if version is None else version
        done, metrics = self.partial.step(self.engine, self.role, self.sampling, version, self._seed(step, 0),
                                          self._new_prompt, trained_at=step)
        metrics["rollout/staleness"] = metrics["rollout/staleness_max"]
        return groups_to_batch(done, self.prompts, self.engine.tokenizer, version=step), metrics

    def more(self, step: int, groups: int, round_: int) -> RolloutBatch:
        """`groups` more complete groups of the same step (dynamic sampling's extra rounds): the pool goes on,
        and keeps the groups completed beyond `groups`."""
        done, _ = self.partial.step(self.engine, self.role, self.sampling, step, self._seed(step, round_),
                                    self._new_prompt, keep=groups, join=False)
        return groups_to_batch(done, self.prompts, self.engine.tokenizer, version=step)

    def epoch(self, step: int) -> int:
        return max(self.partial.position - 1, 0) // len(self.prompts)

    def state(self) -> dict[str, dict]:
        return {"rollout_pool": self.partial.state()}

    def load(self, extra: dict) -> None:
        self.partial.load(extra["rollout_pool"])

    def _new_prompt(self, position: int) -> tuple[int, list[int], int]:
        index = self.order.at(position)
        ids = self.engine.tokenizer.encode(self._render(index))
        return index, ids, expected_tokens(self.prompts[index], self.max_tokens)


def rollout_engine(recipe: Recipe, device: str, distributed: bool) -> VllmEngine:
    """This rank's part of a rollout engine as the recipe's rollout section says (`device` "gpu"|"cpu";
    `distributed`: inside a multi-rank world, vLLM's external launcher). It is built with dummy weights
    (nothing read from disk; the first sync fills it), with sleep mode when it shares the actor's GPU
    (`rollout.colocate`): it is then built asleep, its dummy weights dropped."""
    r = recipe.rollout
    engine = VllmEngine(recipe.model.path, tokenizer=recipe.model.tokenizer, device=device, tp=r.tp,
                        dtype=recipe.model.dtype, seed=recipe.schedule.seed,
                        max_model_len=r.max_prompt_tokens + r.max_tokens,
                        gpu_memory_utilization=r.gpu_memory_utilization, distributed=distributed,
                        sleep_mode=r.colocate, dummy_weights=True, cpu_kv_cache_gib=r.cpu_kv_cache_gib)
    if r.colocate:
        engine.sleep(level=2)
    return engine


def _to_batch(indices: list[int], rows: list[dict], groups: list) -> RolloutBatch:
    """Flatten prompt groups into one batch (group g holds the completions of prompt g)."""
    flat = [(g, c) for g, group in enumerate(groups) for c in group]
    return RolloutBatch(prompt_index=[indices[g] for g, _ in flat], group=[g for g, _ in flat],
                        samples=[rows[g] for g, _ in flat], prompt_ids=[c.prompt_ids for _, c in flat],
                        response_ids=[c.response_ids for _, c in flat], texts=[c.text for _, c in flat],
                        truncated=[c.truncated for _, c in flat], rollout_logprobs=[c.logprobs for _, c in flat])
