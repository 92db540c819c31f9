import dataclasses

import pytest

from lwz.errors import LwzError
from lwz.rewards.format import FormatReward
from lwz.rewards.length import LengthReward
from lwz.rewards.registry import REWARDS, build_reward, reward_params


def test_names_and_param_defaults():
    assert {"length", "format"} <= set(REWARDS)
    assert reward_params("length") == {"l_max": 20000, "zero_range_reward": 1.0, "measure": "answer"}
    assert reward_params("format") == {
        "expect_think": None, "ngram": 4, "ngram_cjk": 8, "max_ngram_repeat": 0.4,
        "paragraph_similarity": 0.5, "min_paragraph_units": 10, "max_duplicate_paragraphs": 0.2}


def test_build_reward_scores_a_batch():
    length = build_reward("length", l_max=1000)
    assert isinstance(length, LengthReward) and length.l_max == 1000
    fmt = build_reward("format", expect_think=False)
    assert isinstance(fmt, FormatReward) and not fmt.expect_think
    responses = ["<think>plan</think><answer>one two</answer>", "<answer>one two three four</answer>"]
    samples = [{"length_range": [4, 8]}] * 2
    assert length(responses, samples) == [0.5, 1.0]
    assert build_reward("format")(responses, samples) == [1.0, 0.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        length.l_max = 5


def test_unknown_names_and_params_are_errors():
    with pytest.raises(LwzError, match="did you mean 'length'") as info:
        build_reward("lenght")
    assert info.value.key == "name"
    with pytest.raises(LwzError, match="did you mean 'l_max'") as info:
        build_reward("length", lmax=3)
    assert info.value.key == "lmax"
    with pytest.raises(LwzError) as info:
        build_reward("format", ngram=0)
    assert info.value.key == "ngram"
