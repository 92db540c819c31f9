import math

import numpy as np
import pytest
import torch

from lwz.errors import LwzError
from lwz.rewards.mix import combine_advantages, group_normalize, mean_of_normalized, weighted_sum

EPS = 1e-6


def test_group_normalize_hand_computed():
    # mean 2, population std sqrt(2/3)
    expected = np.array([-1, 0, 1]) / (math.sqrt(2 / 3) + EPS)
    np.testing.assert_allclose(group_normalize([1, 2, 3], [5, 5, 5]), expected)
    # two groups, interleaved, non-contiguous ids: group 7 is {1, 0} (std 0.5), group 3 {10, 20} (std 5)
    np.testing.assert_allclose(group_normalize([1, 10, 0, 20], [7, 3, 7, 3]),
                               [0.5 / (0.5 + EPS), -5 / (5 + EPS), -0.5 / (0.5 + EPS), 5 / (5 + EPS)])


def test_zero_variance_groups_give_zero_not_nan():
    out = group_normalize([0.1, 0.1, 0.1, 0.7, 0.3], [0, 0, 0, 1, 2])
    assert out.tolist()[:3] == [0.0, 0.0, 0.0]                   # equal rewards
    assert out[3] == 0.0 and out[4] == 0.0                       # groups of one
    tiny = group_normalize([1.0, 1.0 + 1e-12], [0, 0])
    assert np.isfinite(tiny).all() and abs(tiny).max() < 1e-5    # eps keeps near-constant groups small
    assert group_normalize([], []).shape == (0,)


def test_mean_of_normalized_hand_computed():
    rewards = {"length": [1, 0, 0], "writing": [0, 0.5, 1]}
    # length: mean 1/3, std sqrt(2/9) -> [2/3, -1/3, -1/3] / sqrt(2/9)
    a_len = np.array([2, -1, -1]) / 3 / (math.sqrt(2 / 9) + EPS)
    # writing: mean 1/2, std sqrt(1/6) -> [-1/2, 0, 1/2] / sqrt(1/6)
    a_wri = np.array([-0.5, 0, 0.5]) / (math.sqrt(1 / 6) + EPS)
    np.testing.assert_allclose(mean_of_normalized(rewards, {"length": 1, "writing": 1}, [0, 0, 0]),
                               (a_len + a_wri) / 2)
    np.testing.assert_allclose(mean_of_normalized(rewards, {"length": 2, "writing": 1}, [0, 0, 0]),
                               (2 * a_len + a_wri) / 3)
    np.testing.assert_allclose(mean_of_normalized(rewards, {"length": 1, "writing": 0}, [0, 0, 0]), a_len)


def test_weighted_sum_hand_computed_and_differs():
    rewards = {"length": [1, 0, 0], "writing": [0, 0.5, 1]}
    # sum [1, 0.5, 1]: mean 5/6, deviations [1/6, -1/3, 1/6], std sqrt(1/18)
    expected = np.array([1 / 6, -1 / 3, 1 / 6]) / (math.sqrt(1 / 18) + EPS)
    np.testing.assert_allclose(weighted_sum(rewards, {"length": 1, "writing": 1}, [0, 0, 0]), expected)
    np.testing.assert_allclose(combine_advantages("weighted_sum", rewards, {"length": 1, "writing": 1}, [0, 0, 0]),
                               expected)
    assert not np.allclose(expected, combine_advantages("mean_of_normalized", rewards,
                                                        {"length": 1, "writing": 1}, [0, 0, 0]))


def test_a_constant_term_adds_no_advantage():
    # a [0, 0] prompt: the length reward is the constant 1.0 over the group
    rewards = {"length": [1.0, 1.0, 1.0, 1.0], "format": [1.0, 0.0, 1.0, 1.0]}
    a_fmt = group_normalize(rewards["format"], [0, 0, 0, 0])
    np.testing.assert_allclose(mean_of_normalized(rewards, {"length": 1, "format": 1}, [0] * 4), a_fmt / 2)
    np.testing.assert_allclose(weighted_sum(rewards, {"length": 1, "format": 1}, [0] * 4), a_fmt)


def test_torch_inputs_and_numpy_output():
    out = mean_of_normalized({"a": torch.tensor([1.0, 0.0])}, {"a": 1.0}, torch.tensor([3, 3]))
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(torch.from_numpy(out).numpy(), [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS)])


def test_errors():
    with pytest.raises(LwzError, match="same terms"):
        mean_of_normalized({"a": [1, 0]}, {"b": 1}, [0, 0])
    with pytest.raises(LwzError, match="positive sum"):
        weighted_sum({"a": [1, 0]}, {"a": 0}, [0, 0])
    with pytest.raises(LwzError, match=">= 0"):
        mean_of_normalized({"a": [1, 0], "b": [0, 1]}, {"a": 2, "b": -1}, [0, 0])
    with pytest.raises(LwzError, match="did you mean 'weighted_sum'") as info:
        combine_advantages("weighted_sun", {"a": [1, 0]}, {"a": 1}, [0, 0])
    assert info.value.key == "rewards.combine"
    with pytest.raises(AssertionError, match="finite"):
        group_normalize([1.0, float("nan")], [0, 0])
    with pytest.raises(AssertionError, match="shapes"):
        group_normalize([1.0, 2.0], [0])
