"""A recipe's reward terms as one object: score a step's responses, mix them into advantages."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe
from lwz.rewards.format import FormatReward
from lwz.rewards.mix import combine_advantages
from lwz.rewards.registry import build_reward, recipe_params
from lwz.rewards.term import RewardTerm
from lwz.rewards.writing_rm import RewardModelError

log = logging.getLogger(__name__)


@dataclass
class RewardMix:
    """Named reward terms, their weights and how they combine."""

    terms: dict[str, RewardTerm]
    weights: dict[str, float]
    combine: str
    eps: float

    @classmethod
    def from_recipe(cls, recipe: Recipe, plan: Plan | None = None) -> RewardMix:
        """The recipe's terms; with a `plan` (on an actor rank of a run), terms served by a model (the writing
        RM) build this rank's shard of it on the actor's grid (collective: every actor rank calls this in the
        same order)."""
        terms: dict[str, RewardTerm] = {}
        for term in recipe.rewards.terms:
            terms[term.name] = built = build_reward(term.name, **recipe_params(term.name, term.params, recipe))
            if plan is not None and hasattr(built, "serve"):
                try:
                    built.serve(dtype=recipe.model.dtype, micro_batch_tokens=recipe.actor.micro_batch_tokens,
                                sequence_parallel=recipe.actor.sequence_parallel)
                except RewardModelError as e:
                    if built.on_failure != "skip_term":
                        raise
                    log.warning("reward %s will be skipped: %s", term.name, e)
        return cls(terms, {t.name: t.weight for t in recipe.rewards.terms}, recipe.rewards.combine,
                   recipe.rewards.eps)

    def score(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]],
              response_tokens: Sequence[int] | None = None) -> dict[str, list[float]]:
        """Each term's reward of each response (terms on token counts get `response_tokens`); a reward
        model that fails with `on_failure: skip_term` is left out of this step (and logged), any other
        failure stops the run."""
        out = {}
        for name, term in self.terms.items():
            tokens = {"response_tokens": response_tokens} if getattr(term, "uses_token_counts", False) else {}
            try:
                out[name] = [float(r) for r in term(responses, samples, **tokens)]
            except RewardModelError as e:
                if getattr(term, "on_failure", "error") != "skip_term":
                    raise
                log.warning("reward %s skipped this step: %s", name, e)
        return out

    def advantages(self, rewards: Mapping[str, Sequence[float]], groups: Sequence[int]) -> list[float]:
        """One advantage per response (per-reward group normalisation, then the recipe's mix)."""
        weights = {k: self.weights[k] for k in rewards}
        return combine_advantages(self.combine, rewards, weights, np.asarray(groups), self.eps).tolist()

    def total(self, rewards: Mapping[str, Sequence[float]]) -> float:
        """Weighted mean reward of the step (for logging)."""
        weight = sum(self.weights[k] for k in rewards) or 1.0
        return float(sum(self.weights[k] * np.mean(v) for k, v in rewards.items()) / weight)

    @property
    def format_settings(self) -> FormatReward:
        """The structure/repetition measures used for the reward-hacking metrics."""
        term = self.terms.get("format")
        return term if isinstance(term, FormatReward) else FormatReward()
