"""Reward terms by short name, as recipes choose them (`rewards.terms[].name`).

Each entry is a dataclass whose fields are the term's parameters, declared once with their documentation,
choices and bounds (`lwz.recipe.settings.setting`: the recipe loader checks a term's `params` against them and
the README's reference lists them), and whose instances are `RewardTerm`s:
`build_reward("length", l_max=15000)(responses, samples)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lwz.errors import LwzError, did_you_mean
from lwz.rewards.format import FormatReward
from lwz.rewards.length import LengthReward
from lwz.rewards.overlong import OverlongPenalty
from lwz.rewards.term import RewardTerm
from lwz.rewards.writing_rm import WritingRMReward

REWARDS: dict[str, type] = {"length": LengthReward, "format": FormatReward, "writing_rm": WritingRMReward,
                            "overlong": OverlongPenalty}


def _term_class(name: str) -> type:
    if name not in REWARDS:
        raise LwzError(None, "name", f"unknown reward {name!r}; allowed: {', '.join(sorted(REWARDS))}"
                       + did_you_mean(name, REWARDS))
    return REWARDS[name]


def recipe_params(name: str, params: dict[str, Any], recipe: Any) -> dict[str, Any]:
    """A recipe term's `params` with the nulls its reward fills from the recipe (`recipe_defaults`)."""
    filled = dict(params)
    defaults = getattr(_term_class(name), "recipe_defaults", None)
    for key, value in (defaults(recipe) if defaults else {}).items():
        if filled.get(key) is None:
            filled[key] = value
    return filled


def reward_params(name: str) -> dict[str, Any]:
    """The parameters of reward `name` and their defaults."""
    return {f.name: f.default for f in dataclasses.fields(_term_class(name))}


def build_reward(name: str, **params: Any) -> RewardTerm:
    """Reward term `name` with `params` over its defaults; LwzError names an unknown or bad parameter."""
    allowed = reward_params(name)
    for key in params:
        if key not in allowed:
            raise LwzError(None, key, f"unknown parameter of the {name!r} reward; allowed: "
                           f"{', '.join(allowed)}" + did_you_mean(key, allowed))
    return _term_class(name)(**params)
