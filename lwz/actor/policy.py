"""The learner of the loop: a megatron-core policy that scores rollouts and takes GRPO steps.

Every rank of a data-parallel replica (its TP and PP ranks) is handed the same `RolloutBatch`,
this replica's share. Micro-batches of at most `actor.micro_batch_tokens` padded tokens run
through megatron's pipeline schedule (forward-only for logprobs), so TP, PP and DP all work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from lwz.actor.checkpoint import load_checkpoint, save_checkpoint
from lwz.actor.convert import iter_hf_weights, load_hf_into_megatron, read_hf_config
from lwz.actor.logprobs import projected_logprobs_and_entropy, release_projection_buffers
from lwz.actor.model import build_gpt_model, unwrap_model
from lwz.actor.learner import Learner
from lwz.algo.grpo import LossSettings, policy_loss
from lwz.algo.rollout_correction import CORRECTION_METRICS
from lwz.batch import PaddedTokens, RolloutBatch
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.runtime.device import release_memory
from lwz.runtime.gpu_rules import gpu_rules

__all__ = ["Policy"]

log = logging.getLogger(__name__)

# Token-weighted metrics of the GRPO loss, averaged over the mini-batch's response tokens.
_TOKEN_METRICS = ("clip_fraction", "clip_low_fraction", "clip_high_fraction", "ratio_mean", "approx_kl_old",
                  "entropy")  # fmt: skip
# With the engine's logprobs of the sampled tokens: the train/inference mismatch (and TIS weights).
_MISMATCH_METRICS = ("rollout_logprob_diff", "rollout_kl")  # over fresh tokens; the others over the loss's


class Policy(Learner):
    """The actor model with megatron DDP, its optimizer and LR schedule (build after `lwz.runtime` init)."""

    def __init__(self, recipe: Recipe, plan: Plan):
        algo = recipe.algo
        super().__init__(read_hf_config(recipe.model.path), recipe.model, recipe.actor,
                         recipe.schedule.steps * algo.mini_batches * algo.epochs)
        assert self.dp_size == plan.dp, f"megatron has DP={self.dp_size}, the plan {plan.dp}"
        self.recipe = recipe
        self.loss_settings = LossSettings(
            clip_low=algo.clip_low, clip_high=algo.clip_high, kl_coef=algo.kl_coef, kl_estimator=algo.kl_estimator,
            loss_agg=algo.loss_agg, rollout_correction=algo.rollout_correction, tis_cap=algo.tis_cap,
            stale_tokens=recipe.rollout.stale_tokens, clip_ratio_c=algo.clip_ratio_c,
            correction_low=algo.correction_low, correction_high=algo.correction_high)
        # The rollout samples from softmax(logits / T): every logprob and the entropy are of that distribution.
        self.temperature = recipe.rollout.temperature
        # Sequence parallelism splits positions over the TP ranks: sequences are padded to a multiple of TP.
        self._length_multiple = plan.tp if recipe.actor.sequence_parallel else 1
        # The frozen initial policy, for the KL penalty (algo.kl_coef > 0); sharded like the actor.
        self.reference = self._frozen_model(self.dtype) if algo.kl_coef > 0 else None
        self._token_metrics = _TOKEN_METRICS + (("kl",) if algo.kl_coef > 0 else ())
        self._mismatch_metrics = _MISMATCH_METRICS + (CORRECTION_METRICS if algo.rollout_correction != "none" else ())
        self._vocab_size = unwrap_model(self.model).hf_vocab_size

    def _frozen_model(self, dtype: torch.dtype) -> torch.nn.Module:
        model = build_gpt_model(self.hf_config, dtype=dtype)
        model.config.variable_seq_lengths = True
        load_hf_into_megatron(model, self.recipe.model.path, self.hf_config)
        model.requires_grad_(False)
        return model.eval()

    # ------------------------------------------------------------------ forward passes

    def _run(self, micro: list[PaddedTokens], loss_fn, forward_only: bool, model: torch.nn.Module | None = None
             ) -> list:
        """Megatron's schedule over `micro`; `loss_fn(padded, hidden, tokens, weight)` runs on the last stage
        with the output layer's input at the response positions and its weight (`_output_layer_input`)."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        device = self._device

        def step(data_iterator, module):
            padded = next(data_iterator)
            tokens = padded.tokens.to(device)
            batch, length = tokens.shape
            positions = torch.arange(length, device=device).expand(batch, length)
            with _output_layer_input(module, padded.response_mask) as projection:
                output = module(tokens, positions, None)  # causal attention needs no mask
            return output, lambda out, non_loss_data=False: loss_fn(padded, out, tokens, projection.weight)

        first = micro[0].tokens.shape
        gpu_rules().actor_phase("update")  # the update's passes (old, reference logprobs included)
        try:
            return get_forward_backward_func()(
                forward_step_func=step, data_iterator=iter(micro), model=[model or self.model],
                num_microbatches=len(micro), seq_length=first[1], micro_batch_size=first[0],
                forward_only=forward_only, collect_non_loss_data=forward_only,
            )  # fmt: skip
        finally:
            release_projection_buffers()  # the next phase (a colocated engine's) gets the memory back

    def _micro_batches(self, batch: RolloutBatch) -> tuple[list[list[int]], list[PaddedTokens]]:
        """Index groups of at most `actor.micro_batch_tokens` padded tokens and their padded tokens."""
        groups = batch.micro_batches(self.recipe.actor.micro_batch_tokens)
        return groups, [batch.padded(indices, multiple=self._length_multiple) for indices in groups]

    @property
    def needs_old_logprobs(self) -> bool:
        """Whether the loss needs a separate pass for the old logprobs: not when every rollout batch takes
        one optimizer step (one mini-batch, one epoch), where they equal the update's own logprobs."""
        return self.recipe.algo.mini_batches > 1 or self.recipe.algo.epochs > 1

    def compute_logprobs(self, batch: RolloutBatch, reference: bool = False) -> list[torch.Tensor]:
        """fp32 logprobs of each sequence's response tokens (CPU, detached), on every rank of the replica;
        `reference`: under the frozen initial policy (for the KL penalty) instead of the current one."""
        from megatron.core import parallel_state

        groups, micro = self._micro_batches(batch)

        def score(padded, hidden, tokens, weight):
            logprobs = self._logprobs_and_entropy(padded, hidden, tokens, weight)[0]
            return logprobs.contiguous()

        self.model.eval()
        assert not reference or self.reference is not None, "reference logprobs need algo.kl_coef > 0"
        with torch.no_grad():
            outputs = self._run(micro, score, forward_only=True, model=self.reference if reference else None)
        self.model.train()
        last = parallel_state.is_pipeline_last_stage()
        result: list[torch.Tensor] = [torch.empty(0)] * len(batch)
        for i, (padded, indices) in enumerate(zip(micro, groups)):
            values = outputs[i].float() if last else torch.empty(padded.response_mask.shape, device=self._device)
            if parallel_state.get_pipeline_model_parallel_world_size() > 1:
                torch.distributed.broadcast(values, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                            group=parallel_state.get_pipeline_model_parallel_group())  # fmt: skip
            for index, values_i in zip(indices, padded.gather(values)):
                result[index] = values_i.cpu().clone()
        return result

    def _logprobs_and_entropy(self, padded: PaddedTokens, hidden: torch.Tensor, tokens: torch.Tensor,
                              weight: torch.Tensor, loss_of=None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L - 1] logprobs (differentiable) and entropies of the response labels, zeros elsewhere;
        `loss_of(logprobs)`, the loss to be taken of them, lets the projection make its gradients early."""
        b, p = padded.response_mask.nonzero(as_tuple=True)
        labels = tokens[b.to(tokens.device), (p + 1).to(tokens.device)]
        logprobs, entropy = projected_logprobs_and_entropy(
            hidden[0], weight, labels, self._vocab_size, self.temperature, self.recipe.actor.vocab_chunk_tokens,
            token_grad=None if loss_of is None else _token_grad(padded, loss_of, len(labels)))
        return _dense(padded, logprobs), _dense(padded, entropy)

    # ------------------------------------------------------------------ the update

    def loss_tokens(self, batch: RolloutBatch) -> int:
        """The batch's response tokens the loss averages over (not those of sequences out of the loss, nor
        stale ones where `rollout.stale_tokens` masks them)."""
        return sum(self.loss_settings.loss_tokens(len(batch.response_ids[i]), batch.stale(i))
                   for i in range(len(batch)) if batch.in_loss(i))

    def _global_counts(self, batch: RolloutBatch) -> tuple[float, float]:
        """Response tokens and sequences in the loss, over the whole mini-batch (all DP ranks)."""
        from megatron.core import parallel_state

        kept = sum(batch.in_loss(i) for i in range(len(batch)))
        counts = torch.tensor([self.loss_tokens(batch), kept], dtype=torch.float64,
                              device=self._device)  # fmt: skip
        torch.distributed.all_reduce(counts, group=parallel_state.get_data_parallel_group())
        return counts[0].item(), counts[1].item()

    def _without_zero_gradient(self, batch: RolloutBatch) -> tuple[RolloutBatch, float]:
        """This rank's batch without the sequences whose gradient is zero by construction (out of the loss, or
        advantage 0 and no KL term: whole groups of equal rewards), and the skipped fraction of the mini-batch.

        They stay in the loss's normaliser (counted before), so the gradient is the same; the token metrics
        are over the trained sequences. One sequence stays when all would go: every rank runs the schedule.
        """
        from megatron.core import parallel_state

        keep = list(range(len(batch)))
        if self.reference is None:
            keep = [i for i in keep if batch.advantages[i] != 0.0 and batch.in_loss(i)] or keep[:1]
        counts = torch.tensor([len(batch) - len(keep), len(batch)], dtype=torch.float64, device=self._device)
        torch.distributed.all_reduce(counts, group=parallel_state.get_data_parallel_group())
        return (batch if len(keep) == len(batch) else batch.select(keep)), counts[0].item() / max(counts[1].item(), 1)

    def train_on(self, batch: RolloutBatch) -> list[dict[str, float]]:
        """A step's updates on the whole (scored) batch, one metrics dict per optimizer step: `algo.mini_batches`
        mini-batches, this DP rank's share of each, their old logprobs (when the loss needs a pass of its
        own) and reference logprobs (KL) under the weights before the first update, then `algo.epochs`
        passes over them."""
        algo = self.recipe.algo
        shards = [mini.shard(self.dp_rank, self.dp_size) for mini in batch.chunks(algo.mini_batches)]
        for shard in shards:
            if self.needs_old_logprobs:
                shard.old_logprobs = self.compute_logprobs(shard)
            if self.reference is not None:
                shard.ref_logprobs = self.compute_logprobs(shard, reference=True)
        updates = [self.update(shard) for _ in range(algo.epochs) for shard in shards]
        release_memory()
        return updates

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """One optimizer step on this DP rank's share of a mini-batch; metrics are the same on every rank.

        Without `batch.old_logprobs` the old logprobs are this forward pass's, detached (the on-policy
        step: the ratio is 1 and only its gradient counts), which saves a whole forward pass. Sequences whose
        gradient is zero are not run (`_without_zero_gradient`; metric `skipped_fraction`).
        """
        assert len(batch.advantages) == len(batch) and len(batch.old_logprobs) in (0, len(batch)), \
            "update needs advantages for every sequence, and old_logprobs for all or none"
        tokens_total, seqs_total = self._global_counts(batch)
        normalizer = max(tokens_total if self.loss_settings.loss_agg == "token_mean" else seqs_total, 1.0)
        batch, skipped = self._without_zero_gradient(batch)
        groups, micro = self._micro_batches(batch)
        old = [padded.scatter([batch.old_logprobs[i] for i in idx]) for padded, idx in zip(micro, groups)] \
            if batch.old_logprobs else None  # on-policy: old = this pass's logprobs (see needs_old_logprobs)
        engine = [padded.scatter([torch.tensor(batch.rollout_logprobs[i]) for i in idx])
                  for padded, idx in zip(micro, groups)] if batch.has_rollout_logprobs() else None
        names = self._token_metrics + (self._mismatch_metrics if engine is not None else ())
        adv = [torch.tensor([batch.advantages[i] for i in idx], dtype=torch.float32) for idx in groups]
        keep = [torch.tensor([float(batch.in_loss(i)) for i in idx])[:, None] for idx in groups]
        fresh = [padded.scatter([torch.arange(len(batch.response_ids[i])) >= batch.stale(i) for i in idx])
                 for padded, idx in zip(micro, groups)] if batch.stale_tokens and self.loss_settings.marks_stale else None
        ref = [padded.scatter([batch.ref_logprobs[i] for i in idx]) for padded, idx in zip(micro, groups)] \
            if self.reference is not None else None
        # The schedule divides each micro-batch loss by their count and DDP averages gradients over
        # DP; the loss is already normalised over the global mini-batch, so undo both.
        scale = len(micro) * self.dp_size
        index = {id(p): k for k, p in enumerate(micro)}

        def loss_fn(padded, hidden, tokens, weight):
            k, device = index[id(padded)], hidden.device
            mask = padded.response_mask.to(device) * keep[k].to(device)

            def loss_of(logprobs):
                old_k = logprobs.detach() if old is None else old[k].to(device)
                return policy_loss(logprobs, old_k, adv[k].to(device), mask, self.loss_settings,
                                   ref_logprobs=None if ref is None else ref[k].to(device), normalizer=normalizer,
                                   engine_logprobs=None if engine is None else engine[k].to(device),
                                   fresh=None if fresh is None else fresh[k].to(device))  # fmt: skip

            logprobs, entropy = self._logprobs_and_entropy(padded, hidden, tokens, weight,
                                                           lambda values: loss_of(values)[0])  # fmt: skip
            loss, metrics = loss_of(logprobs)
            fresh_k = mask if fresh is None else mask * fresh[k].to(device)
            in_loss = mask if fresh is None else self.loss_settings.in_loss(mask, fresh_k)
            metrics["entropy"] = (entropy * in_loss).sum() / in_loss.sum().clamp(min=1)
            n, n_fresh = in_loss.sum(), fresh_k.sum()
            sums = torch.stack([loss.detach(), n, n_fresh,
                                *(metrics[name] * (n_fresh if name in _MISMATCH_METRICS else n) for name in names)])
            return loss * scale, sums

        self.zero_grad()
        outputs = self._run(micro, loss_fn, forward_only=False)
        stepped = self.optimizer_step()
        sums = self.replica_sums(outputs, 3 + len(names))
        tokens, fresh_tokens = sums[1].item(), sums[2].item()
        result = {"loss": sums[0].item(), **stepped, "tokens": tokens, "skipped_fraction": skipped}
        result.update({name: sums[3 + j].item() / max(fresh_tokens if name in _MISMATCH_METRICS else tokens, 1.0)
                       for j, name in enumerate(names)})
        return result

    # ------------------------------------------------------------------ weights and checkpoints

    def hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Collective: `(hf_name, full_tensor)` for the whole model on every rank (for the engines)."""
        return iter_hf_weights(self.model, self.hf_config)

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        """Collective: checkpoint model, optimizer, LR schedule position, RNG and the loop's `extra`."""
        gpu_rules().actor_phase("save")
        save_checkpoint(folder, self.model, self.optimizer, {"optimizer_steps": self.optimizer_steps, "extra": extra})

    def load(self, folder: Path) -> dict[str, Any]:
        """Collective: restore a checkpoint (saved at any TP/PP/DP); returns the loop's `extra`."""
        state = load_checkpoint(folder, self.model, self.optimizer)
        self.optimizer_steps = state["optimizer_steps"]
        return state["extra"]


@contextmanager
def _output_layer_input(module: torch.nn.Module, response_mask: torch.Tensor):
    """Make the model return its output layer's input at the positions that predict response tokens,
    [1, N, H] (row-major over [B, L - 1]), instead of the logits of every position.

    Yields a holder whose `weight` is the output layer's (vocab-parallel) weight once the forward ran;
    the loss projects in chunks (`projected_logprobs_and_entropy`), so prompt positions get no
    projection and the logits never exist whole. The input's gradient is reduced over TP as the output
    layer would (sequence parallelism: all-gathered positions, their gradient reduce-scattered).
    On stages without the output layer the model is unchanged.
    """
    from megatron.core.tensor_parallel import copy_to_tensor_model_parallel_region, gather_from_sequence_parallel_region

    holder = SimpleNamespace(weight=None)
    output_layer = getattr(unwrap_model(module), "output_layer", None)
    if output_layer is None:
        yield holder
        return
    b, p = response_mask.nonzero(as_tuple=True)

    def forward(hidden, weight=None, runtime_gather_output=None):
        holder.weight = output_layer.weight if weight is None else weight
        if output_layer.sequence_parallel:
            hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True)
        else:
            hidden = copy_to_tensor_model_parallel_region(hidden)
        return hidden[p.to(hidden.device), b.to(hidden.device)].unsqueeze(1), None   # [L, B, H] -> [N, 1, H]

    output_layer.forward = forward
    try:
        yield holder
    finally:
        del output_layer.forward


def _token_grad(padded: PaddedTokens, loss_of, n: int):
    """`token_grad` for `projected_logprobs_and_entropy`: d loss_of(logprobs) / d logprobs at the positions
    `rows` (of the N response positions) given their logprobs. GRPO's losses are sums over tokens, so a
    position's gradient depends on its own logprob only; the other positions' values do not matter."""

    def token_grad(rows: slice, logprobs: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            values = torch.zeros(n, dtype=torch.float32, device=logprobs.device)
            values[rows] = logprobs
            values.requires_grad_()
            return torch.autograd.grad(loss_of(_dense(padded, values)), values)[0][rows]

    return token_grad


def _dense(padded: PaddedTokens, values: torch.Tensor) -> torch.Tensor:
    """Per-label values [N] of the response positions as [B, L - 1] (zeros elsewhere)."""
    mask = padded.response_mask
    b, p = mask.nonzero(as_tuple=True)
    dense = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return dense.index_put((b.to(values.device), p.to(values.device)), values)
