"""One rank of a real multi-process actor run over gloo (start it with `torch.distributed.run`).

Scenarios (rank 0 writes the results to OUT as a torch file):
  logprobs  vocab-parallel logprobs/entropy vs plain log_softmax, and Policy.compute_logprobs vs HF
  train     UPDATES GRPO updates on a fixed batch (advantages +, -, +, -); losses and logprobs
  on_policy one update with a separate old-logprob pass vs one that skips it (old = its own logprobs)
  masked    one update with a sequence out of the loss (loss_mask) vs one on the batch without it
  zero_advantage  one update with two zero-advantage sequences skipped vs one that trains on them too
  projection  logprobs and gradients through megatron's output layer (whole logits) vs the chunked
            projection of its input (`projected_logprobs_and_entropy`, 5 positions a chunk, and one chunk;
            with a predicted per-position gradient, and a wrong one)
  predicted_update  two updates with the projection's gradients made in its forward pass vs recomputed
  save      like train, saving a checkpoint after SAVE_AT updates into FOLDER/ckpt (and the Megatron logits)
  resume    load the latest checkpoint from FOLDER/ckpt and run the remaining updates
  stand_in  load the latest checkpoint from FOLDER/ckpt into an optimizer of a stand-in class: the refusal
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from lwz.batch import RolloutBatch
from lwz.recipe.load import load_recipe, recipe_to_yaml

REPO = Path(__file__).resolve().parents[2]
ADVANTAGES = [1.0, -1.0, 1.0, -1.0]
LOGIT_PROBE = [[16321, 872, 198, 9707, 11, 1879, 0, 16322, 198, 395, 11202]]   # <|im_start|>user\nHello, world!<|im_end|>\nassistant


def make_recipe(tp: int, pp: int, world: int, lr: float = 1e-4, sequence_parallel: bool = False):
    return load_recipe(REPO / "recipes" / "tiny.yaml", [
        f"actor.tp={tp}", f"actor.pp={pp}", f"cluster.gpus_per_node={world}", f"actor.lr={lr}",
        f"actor.sequence_parallel={str(sequence_parallel).lower()}",
        "actor.micro_batch_tokens=32", "rollout.max_prompt_tokens=16", "rollout.max_tokens=16",
        "actor.grad_clip=1.0", "algo.clip_low=0.2", "algo.clip_high=0.28",
        "rewards.terms=[{name: length}]",  # the actor needs no reward-model asset
    ])  # fmt: skip


def make_batch() -> RolloutBatch:
    """Four sequences of 10-16 tokens with fixed random ids (the same on every rank)."""
    g = torch.Generator().manual_seed(7)
    prompts = [torch.randint(0, 16000, (n,), generator=g).tolist() for n in (5, 8, 6, 7)]
    responses = [torch.randint(0, 16000, (n,), generator=g).tolist() for n in (7, 6, 9, 5)]
    n = len(prompts)
    return RolloutBatch(prompt_index=list(range(n)), group=[0] * n, samples=[{}] * n, prompt_ids=prompts,
                        response_ids=responses, texts=[""] * n, truncated=[False] * n,
                        rollout_logprobs=[[] for _ in range(n)], advantages=list(ADVANTAGES))  # fmt: skip


def init(tp: int, pp: int, world: int, sequence_parallel: bool = False):
    from lwz.plan.resolve import resolve
    from lwz.runtime import init_distributed

    recipe = make_recipe(tp, pp, world, sequence_parallel=sequence_parallel)
    runtime = init_distributed(tp=tp, pp=pp, seed=recipe.schedule.seed)
    return recipe, resolve(recipe), runtime


def scenario_logprobs(args) -> dict:
    from megatron.core import parallel_state

    from lwz.actor.logprobs import vocab_parallel_logprobs
    from lwz.actor.policy import Policy

    recipe, plan, _ = init(args.tp, args.pp, args.world)
    result: dict = {}
    if args.pp == 1:  # the functions themselves, on random logits with a padded vocabulary
        tp, rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
        vocab, padded = 13, 14
        full = torch.randn(3, 5, padded, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
        labels = torch.randint(0, vocab, (3, 5), generator=torch.Generator().manual_seed(2))
        local = full.chunk(tp, dim=-1)[rank].clone().requires_grad_(True)
        logprobs = vocab_parallel_logprobs(local, labels, vocab)
        logprobs.sum().backward()
        reference = torch.log_softmax(full[..., :vocab].float(), -1)
        result["fn_logprobs"] = (logprobs.detach(), reference.gather(-1, labels[..., None])[..., 0])
        result["fn_entropy"] = (entropy_of(local, vocab), -(reference.exp() * reference).sum(-1))
        expected_grad = torch.nn.functional.one_hot(labels, padded).double()
        expected_grad[..., :vocab] -= reference.double().exp() * 1.0
        result["fn_grad"] = (local.grad, expected_grad.chunk(tp, dim=-1)[rank])
    policy = Policy(recipe, plan)
    batch = make_batch()
    result["policy_logprobs"] = policy.compute_logprobs(batch)
    result["hf_logprobs"] = hf_logprobs(recipe.model.path, batch)
    return result


def hf_logprobs(model_path: str, batch: RolloutBatch) -> list[torch.Tensor]:
    """Teacher-forced response logprobs from HF transformers, one sequence at a time."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for p, r in zip(batch.prompt_ids, batch.response_ids):
            ids = torch.tensor([p + r])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            out.append(logp.gather(-1, ids[0, 1:, None])[len(p) - 1:, 0])
    return out


def run_updates(policy, batch: RolloutBatch, old: list[torch.Tensor], count: int) -> list[dict]:
    """`count` updates on this DP rank's share of `batch`, against the fixed `old` logprobs."""
    from megatron.core import parallel_state

    batch.old_logprobs = list(old)
    share = batch.shard(parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size())
    return [policy.update(share) for _ in range(count)]


def scenario_train(args) -> dict:
    from lwz.actor.policy import Policy

    recipe, plan, _ = init(args.tp, args.pp, args.world, args.sequence_parallel)
    policy = Policy(recipe, plan)
    batch = make_batch()
    before = policy.compute_logprobs(batch)
    metrics = run_updates(policy, batch, before, args.updates)
    return {"metrics": metrics, "before": before, "after": policy.compute_logprobs(batch)}


def scenario_on_policy(args) -> dict:
    """One update with old logprobs from a separate pass, and one (from the same initial weights) with
    none, so the update takes its own detached logprobs: loss, grad norm and the logprobs after."""
    from lwz.actor.policy import Policy

    recipe, plan, _ = init(args.tp, args.pp, args.world, args.sequence_parallel)
    result = {}
    for name, separate in (("separate", True), ("skipped", False)):
        policy = Policy(recipe, plan)
        batch = make_batch()
        old = policy.compute_logprobs(batch) if separate else []
        (metrics,) = run_updates(policy, batch, old, 1)
        result[name] = {"metrics": metrics, "after": policy.compute_logprobs(batch)}
    return result


def scenario_zero_advantage(args) -> dict:
    """Advantages [1, 0, -1, 0]: one update that skips the zero-advantage sequences, and one (from the same
    initial weights) that runs them too: metrics and the logprobs after."""
    from lwz.actor.policy import Policy

    recipe, plan, _ = init(args.tp, args.pp, args.world)
    result = {}
    for name in ("skipped", "trained"):
        policy = Policy(recipe, plan)
        if name == "trained":
            policy._without_zero_gradient = lambda batch: (batch, 0.0)
        batch = make_batch()
        batch.advantages = [1.0, 0.0, -1.0, 0.0]
        (metrics,) = run_updates(policy, batch, [], 1)
        result[name] = {"metrics": metrics, "after": policy.compute_logprobs(batch)}
    return result


def scenario_projection(args) -> dict:
    """The same loss (random weights on the response logprobs, tempered) through the model's own output
    layer and through the chunked projection: logprobs, entropies, this rank's gradients and the number of
    chunk projections. `predicted`: the per-position gradient is given to the forward pass (4x the true one:
    the backward finds the scalar); `mispredicted`: a wrong one (the backward recomputes)."""
    from lwz.actor import logprobs as logprobs_module
    from lwz.actor.logprobs import logprobs_and_entropy, projected_logprobs_and_entropy
    from lwz.actor.policy import Policy, _output_layer_input

    recipe, plan, _ = init(args.tp, args.pp, args.world, args.sequence_parallel)
    policy = Policy(recipe, plan)
    padded = make_batch().padded(list(range(4)), multiple=args.tp if args.sequence_parallel else 1)
    tokens = padded.tokens
    positions = torch.arange(tokens.shape[1]).expand(tokens.shape)
    b, p = padded.response_mask.nonzero(as_tuple=True)
    labels = tokens[b, p + 1]
    coefficients = torch.randn(len(labels), generator=torch.Generator().manual_seed(3))
    predictions = {"predicted": lambda rows, values: 4 * coefficients[rows],
                   "mispredicted": lambda rows, values: torch.ones_like(values)}
    vocab, temperature = policy._vocab_size, 0.7
    projections = []
    project = logprobs_module._project
    logprobs_module._project = lambda *a, **k: projections.append(1) or project(*a, **k)
    result = {}
    for name, chunk in (("output_layer", 0), ("chunked", 5), ("one_chunk", len(labels)), ("predicted", 5),
                        ("mispredicted", 5)):  # fmt: skip
        policy.model.zero_grad_buffer()
        projections.clear()
        if name == "output_layer":
            logits = policy.model(tokens, positions, None)[b, p]
            logprobs, entropy = logprobs_and_entropy(logits, labels, vocab, temperature)
        else:
            with _output_layer_input(policy.model, padded.response_mask) as projection:
                hidden = policy.model(tokens, positions, None)
            logprobs, entropy = projected_logprobs_and_entropy(hidden[0], projection.weight, labels, vocab,
                                                               temperature, chunk, predictions.get(name))
        loss = (logprobs * coefficients).sum()
        loss.backward()
        grads = {n: q.main_grad.clone() for n, q in policy.model.named_parameters()}
        result[name] = {"loss": loss.item(), "logprobs": logprobs.detach(), "entropy": entropy, "grads": grads,
                        "projections": len(projections), "chunks": -(-len(labels) // max(chunk, 1))}
    return result


def scenario_predicted_update(args) -> dict:
    """Two updates against fixed old logprobs (the second off-policy: ratios away from 1, some clipped), with
    the GRPO loss's per-token gradient made in the projection's forward pass and without (the backward
    projects again): metrics, the logprobs after, and the chunk projections of each update."""
    from lwz.actor import logprobs as logprobs_module
    from lwz.actor.policy import Policy

    recipe, plan, _ = init(args.tp, args.pp, args.world)
    projections = []
    project = logprobs_module._project
    logprobs_module._project = lambda *a, **k: projections.append(1) or project(*a, **k)
    result = {}
    for name in ("predicted", "recomputed"):
        policy = Policy(recipe, plan)
        if name == "recomputed":
            plain = policy._logprobs_and_entropy
            policy._logprobs_and_entropy = lambda padded, hidden, tokens, weight, loss_of=None: plain(
                padded, hidden, tokens, weight)
        batch = make_batch()
        old = policy.compute_logprobs(batch)
        projections.clear()
        metrics = run_updates(policy, batch, old, 2)
        count = len(projections)
        result[name] = {"metrics": metrics, "after": policy.compute_logprobs(batch), "projections": count}
    return result


def scenario_masked(args) -> dict:
    """One update with sequence 1 masked out of the loss, and one (from the same initial weights) on the
    batch without it: loss, grad norm and the logprobs after."""
    from lwz.actor.policy import Policy

    recipe, plan, _ = init(args.tp, args.pp, args.world)
    result = {}
    for name in ("masked", "dropped"):
        policy = Policy(recipe, plan)
        full = make_batch()
        batch = full.select([0, 2, 3]) if name == "dropped" else full
        if name == "masked":
            batch.loss_mask = [True, False, True, True]
        (metrics,) = run_updates(policy, batch, [], 1)
        result[name] = {"metrics": metrics, "after": policy.compute_logprobs(full)}
    return result


def scenario_save(args) -> dict:
    from lwz.actor.checkpoint import checkpoint_folder
    from lwz.actor.model import forward_logits
    from lwz.actor.policy import Policy
    from lwz.atomic import write_text

    recipe, plan, runtime = init(args.tp, args.pp, args.world)
    run = Path(args.folder)
    if runtime.rank == 0:
        write_text(run / "recipe.yaml", recipe_to_yaml(recipe))
    policy = Policy(recipe, plan)
    batch = make_batch()
    old = policy.compute_logprobs(batch)
    first = run_updates(policy, batch, old, args.save_at)
    policy.save(checkpoint_folder(run / "ckpt", args.save_at), {"step": args.save_at, "old": [t.tolist() for t in old]})
    logits = forward_logits(policy.model, torch.tensor(LOGIT_PROBE))
    rest = run_updates(policy, batch, old, args.updates - args.save_at)
    return {"metrics": first + rest, "logits": logits}


def scenario_resume(args) -> dict:
    from lwz.actor.checkpoint import latest_checkpoint
    from lwz.actor.policy import Policy

    recipe, plan, _ = init(args.tp, args.pp, args.world)
    policy = Policy(recipe, plan)
    folder = latest_checkpoint(Path(args.folder) / "ckpt")
    extra = policy.load(folder)
    old = [torch.tensor(t) for t in extra["old"]]
    rest = run_updates(policy, make_batch(), old, args.updates - args.save_at)
    return {"metrics": rest, "extra_step": extra["step"], "folder": str(folder)}


class StandInAdam(torch.optim.AdamW):
    """Another optimizer class than the one a checkpoint was saved by (as TE's FusedAdam would be)."""


def scenario_stand_in(args) -> dict:
    from lwz.actor.checkpoint import latest_checkpoint, optimizer_classes
    from lwz.actor.policy import Policy
    from lwz.errors import LwzError

    recipe, plan, _ = init(args.tp, args.pp, args.world)
    policy = Policy(recipe, plan)
    for part in getattr(policy.optimizer, "chained_optimizers", [policy.optimizer]):
        part.optimizer.__class__ = StandInAdam
    try:
        policy.load(latest_checkpoint(Path(args.folder) / "ckpt"))
    except LwzError as e:
        return {"error": str(e), "classes": optimizer_classes(policy.optimizer)}
    return {"error": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=("logprobs", "train", "on_policy", "masked", "zero_advantage",
                                             "predicted_update", "projection", "save", "resume", "stand_in"))
    parser.add_argument("out")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--save-at", type=int, default=2)
    parser.add_argument("--folder", default="")
    parser.add_argument("--sequence-parallel", action="store_true")
    args = parser.parse_args()
    args.world = int(os.environ["WORLD_SIZE"])
    logging.basicConfig(level=logging.WARNING)
    result = globals()[f"scenario_{args.scenario}"](args)
    if int(os.environ["RANK"]) == 0:
        torch.save(result, args.out)
    from lwz.runtime import destroy_distributed

    destroy_distributed()


def entropy_of(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The entropy of softmax(logits) per position: the second half of `logprobs_and_entropy` (any labels)."""
    from lwz.actor.logprobs import logprobs_and_entropy

    with torch.no_grad():
        labels = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
        return logprobs_and_entropy(logits, labels, vocab_size)[1]


if __name__ == "__main__":
    main()

