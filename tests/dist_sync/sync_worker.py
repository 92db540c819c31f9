"""One rank of the weight-sync check, the loop's code path over real gloo processes (start it with
`torch.distributed.run`; rank 0 writes the results to OUT as a torch file).

Each rank: `init_distributed`, Policy, the loop's VllmEngine (one rollout engine per rank with
rollout tp=1, built asleep with dummy weights) filled by the first sync with the actor's weights; sample
a batch at temperature 1.0, give it advantages +1/-1, UPDATES policy updates, sync the new weights
(`sync_sleeping_engine`: wake weights, load, wake KV cache) and `export_hf_folder` into EXPORT. The
engine sleeps whenever the actor computes, as the GPU's rules say. Greedy outputs of every rank's engine
after the first sync and after the second, and |vLLM sampled-token logprob - actor logprob| before the
update and after the sync (batches sampled on all engines), go to OUT. Then:
- tempered: a batch sampled at temperature 0.7; the mean |engine logprob - actor old logprob| with
  the actor at T = 0.7 (the loop's setting) and, for contrast, at T = 1;
- perturbed: every actor weight perturbed (the same noise on every rank, so replicated weights stay
  equal), pushed, exported next to EXPORT (as perturbed/); completions sampled after the push.
`--model` runs it on another tiny Qwen2 folder (e.g. one with tied embeddings).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist

from lwz.actor.convert import export_hf_folder
from lwz.actor.policy import Policy
from lwz.batch import RolloutBatch
from lwz.data.templates import render_prompt
from lwz.plan.resolve import Plan, resolve
from lwz.recipe.load import load_recipe
from lwz.recipe.schema import Recipe
from lwz.rollout.role import EngineRole
from lwz.rollout.step_rollout import _to_batch, rollout_engine
from lwz.rollout.weight_sync import sync_sleeping_engine
from lwz.engines.vllm_engine import SamplingSettings, VllmEngine
from lwz.runtime import init_distributed

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["Write a story about a lighthouse.", "写一首关于秋天的诗。", "Describe Paris in spring.", "Hello",
           "Explain how rain forms."]
NEW_TOKENS = 16
GREEDY = SamplingSettings(group_size=1, temperature=0.0, top_p=1.0, max_tokens=NEW_TOKENS)
SAMPLED = SamplingSettings(group_size=2, temperature=1.0, top_p=1.0, max_tokens=NEW_TOKENS)


TEMPERED = 0.7


def make_recipe(tp: int, world: int, lr: float, model: str | None) -> Recipe:
    overrides = [f"model.path={model}", f"model.arch.tie_word_embeddings={is_tied(model)}"] if model else []
    return load_recipe(REPO / "recipes" / "tiny.yaml", [
        f"actor.tp={tp}", f"cluster.gpus_per_node={world}", f"actor.lr={lr}", "rollout.template=raw",
        "rollout.max_prompt_tokens=48", f"rollout.max_tokens={NEW_TOKENS}", "rollout.temperature=1.0",
        "rewards.terms=[{name: length}]", *overrides,  # no reward-model asset needed
    ])  # fmt: skip


def is_tied(model: str) -> bool:
    return bool(json.loads((Path(model) / "config.json").read_text()).get("tie_word_embeddings"))


def greedy_everywhere(engine: VllmEngine, texts: list[str]) -> list[list[list[int]]]:
    """Greedy response ids of `texts` on every rank's own engine: [rank][prompt] -> ids."""
    mine = [group[0].response_ids for group in engine.generate(texts, GREEDY)]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return gathered


def sample(engine: VllmEngine, plan: Plan, texts: list[str], seed: int, temperature: float = 1.0) -> RolloutBatch:
    """A batch sampled like the loop's rollout (prompts spread over all engines, gathered everywhere)."""
    settings = replace(SAMPLED, temperature=temperature)
    role = EngineRole.of("rollout", plan.engine("rollout").ranks)
    groups = role.run(texts, lambda part, e: engine.generate(part, settings, seed + e))
    return _to_batch(list(range(len(texts))), [{"prompt": t} for t in texts], groups)


def logprob_gap(policy: Policy, batch: RolloutBatch, reduce=max) -> tuple[float, int]:
    """Max (or mean) |vLLM sampled-token logprob - actor logprob| over the batch, and how many tokens were
    compared."""
    actor = policy.compute_logprobs(batch)
    assert all(len(r) == len(a) for r, a in zip(batch.rollout_logprobs, actor))
    gaps = torch.cat([(torch.tensor(rollout) - mine).abs() for rollout, mine in zip(batch.rollout_logprobs, actor)])
    return float(reduce(gaps)), len(gaps)


def perturb(policy: Policy) -> None:
    """Add noise to every actor weight; the same generator on every rank keeps replicated weights equal."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("export")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", help="another HF folder than the tiny recipe's model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    recipe = make_recipe(args.tp, int(os.environ["WORLD_SIZE"]), args.lr, args.model)
    plan = resolve(recipe)
    runtime = init_distributed(plan.tp, plan.pp, plan.cp, seed=recipe.schedule.seed, device="cpu")
    policy = Policy(recipe, plan)
    engine = rollout_engine(recipe, plan.device, distributed=runtime.world_size > 1)  # asleep, dummy weights
    sync_sleeping_engine(policy.hf_weights, engine)  # the first sync fills it
    texts = [render_prompt(p, recipe.rollout.template) for p in PROMPTS]

    result: dict = {"prompt_ids": [g[0].prompt_ids for g in engine.generate(texts, GREEDY)],
                    "engines": plan.engine("rollout").ranks, "greedy_before": greedy_everywhere(engine, texts)}
    batch = sample(engine, plan, texts, seed=11)
    engine.sleep(level=2)   # the actor computes: the engine's weights are replaced after the update
    batch.advantages = [1.0 if i % 2 == 0 else -1.0 for i in range(len(batch))]
    batch.old_logprobs = policy.compute_logprobs(batch)
    result["gap_before"] = logprob_gap(policy, batch)
    shard = batch.shard(policy.dp_rank, plan.dp)
    result["updates"] = [policy.update(shard) for _ in range(args.updates)]
    result["sync"] = asdict(sync_sleeping_engine(policy.hf_weights, engine))

    result["greedy_after"] = greedy_everywhere(engine, texts)
    export_hf_folder(policy.model, policy.hf_config, args.export, source_dir=recipe.model.path)
    after = sample(engine, plan, texts, seed=12)
    tempered = sample(engine, plan, texts, seed=13, temperature=TEMPERED)
    engine.sleep(level=2)
    result["gap_after"] = logprob_gap(policy, after)
    policy.temperature = TEMPERED  # the loop's Policy takes it from rollout.temperature
    result["tempered"] = logprob_gap(policy, tempered, torch.mean)
    policy.temperature = 1.0
    result["tempered_at_t1"] = logprob_gap(policy, tempered, torch.mean)

    perturb(policy)
    sync_sleeping_engine(policy.hf_weights, engine)
    export_hf_folder(policy.model, policy.hf_config, Path(args.export).with_name("perturbed"), source_dir=recipe.model.path)
    pushed = sample(engine, plan, texts, seed=14)
    result["perturbed"] = [(p, r, lp) for p, r, lp in zip(pushed.prompt_ids, pushed.response_ids,
                                                          pushed.rollout_logprobs)]
    if runtime.rank == 0:
        torch.save(result, args.out)
    dist.barrier()


if __name__ == "__main__":
    main()
