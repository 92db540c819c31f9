"""DAPO's soft overlong punishment as the `overlong` reward term."""

import pytest

from lwz.errors import LwzError
from lwz.recipe.load import load_recipe
from lwz.rewards.compute import RewardMix
from lwz.rewards.overlong import OverlongPenalty, overlong_penalty


@pytest.mark.parametrize("tokens, expected", [(0, 0.0), (96, 0.0), (97, -1 / 32), (112, -0.5), (128, -1.0),
                                              (129, -1.0)])
def test_zero_before_the_buffer_then_linear_down_to_minus_one(tokens, expected):
    """L_max 128, L_cache 32: 0 up to 96 tokens, ((128 - 32) - |y|) / 32 in the buffer, -1 beyond."""
    assert overlong_penalty(tokens, 128, 32) == pytest.approx(expected)
    assert overlong_penalty(tokens, 128, 32, penalty_factor=0.5) == pytest.approx(expected / 2)


def test_the_term_scores_token_counts_and_needs_them():
    term = OverlongPenalty(buffer=32, max_length=128)
    assert term(["a", "b"], [{}, {}], response_tokens=[50, 112]) == [0.0, -0.5]
    with pytest.raises(LwzError):
        term(["a"], [{}])
    with pytest.raises(LwzError) as e:
        OverlongPenalty(buffer=256, max_length=128)
    assert e.value.key == "buffer"


def test_from_a_recipe_max_length_is_the_rollouts_and_the_mix_passes_token_counts(tmp_path):
    recipe = load_recipe("recipes/tiny.yaml", ["rewards.terms=[{name: length}, {name: overlong, params: {buffer: 16}}]",
                                              "rollout.max_tokens=64"])
    mix = RewardMix.from_recipe(recipe)
    assert mix.terms["overlong"].max_length == 64
    rewards = mix.score(["<answer>x</answer>", "<answer>y</answer>"], [{"length_range": [1, 5]}] * 2,
                        response_tokens=[10, 56])
    assert rewards["overlong"] == [0.0, -0.5] and rewards["length"] == [1.0, 1.0]
