"""Combining reward terms into one advantage per response (GRPO, group-normalised).

Inputs are array-likes (numpy arrays, lists, CPU torch tensors); outputs are float64 numpy arrays
(`torch.from_numpy` turns them into tensors). `group[i]` names the prompt response i answers; group
ids need not be contiguous. Within a group, normalising divides by the population std (ddof=0)
plus `eps`; a group whose values are all equal (or a group of one) gets advantage 0, never NaN.

- `mean_of_normalized` (the paper): A = sum_k w_k A_k / sum_k w_k with
  A_k = (r_k - mean_group(r_k)) / (std_group(r_k) + eps).
- `weighted_sum`: R = sum_k w_k r_k, then A = (R - mean_group(R)) / (std_group(R) + eps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import ArrayLike

from lwz.errors import LwzError, did_you_mean

DEFAULT_EPS = 1e-6


def group_normalize(values: ArrayLike, group: ArrayLike, eps: float = DEFAULT_EPS) -> np.ndarray:
    """(v - mean_group(v)) / (std_group(v) + eps); 0 where the group's values are all equal."""
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(group)
    assert v.ndim == 1 and v.shape == g.shape, f"values {v.shape} and group {g.shape} must be equal 1-D shapes"
    assert np.isfinite(v).all(), "rewards must be finite"
    _, index = np.unique(g, return_inverse=True)
    index = index.reshape(-1)
    count = np.bincount(index)
    mean = np.bincount(index, weights=v) / count
    centred = v - mean[index]
    std = np.sqrt(np.bincount(index, weights=centred**2) / count)
    highest, lowest = np.full(len(count), -np.inf), np.full(len(count), np.inf)
    np.maximum.at(highest, index, v)
    np.minimum.at(lowest, index, v)
    constant = (highest == lowest)[index]
    return np.where(constant, 0.0, centred / (std[index] + eps))


def _checked(rewards: Mapping[str, ArrayLike], weights: Mapping[str, float]) -> dict[str, float]:
    if set(rewards) != set(weights):
        raise LwzError(None, "rewards.terms", f"rewards {sorted(rewards)} and weights {sorted(weights)} "
                       "must name the same terms")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise LwzError(None, "rewards.terms", f"weights {dict(weights)} must be >= 0 with a positive sum")
    return dict(weights)


def mean_of_normalized(rewards: Mapping[str, ArrayLike], weights: Mapping[str, float], group: ArrayLike,
                       eps: float = DEFAULT_EPS) -> np.ndarray:
    """Weighted mean of each term's group-normalised advantage (the paper's combination)."""
    w = _checked(rewards, weights)
    total = sum(w[k] * group_normalize(r, group, eps) for k, r in rewards.items())
    return total / sum(w.values())


def weighted_sum(rewards: Mapping[str, ArrayLike], weights: Mapping[str, float], group: ArrayLike,
                 eps: float = DEFAULT_EPS) -> np.ndarray:
    """Group-normalised weighted sum of the raw rewards."""
    w = _checked(rewards, weights)
    return group_normalize(sum(w[k] * np.asarray(r, dtype=np.float64) for k, r in rewards.items()), group, eps)


COMBINERS: dict[str, Callable[..., np.ndarray]] = {
    "mean_of_normalized": mean_of_normalized,
    "weighted_sum": weighted_sum,
}


def combine_advantages(combine: str, rewards: Mapping[str, ArrayLike], weights: Mapping[str, float],
                       group: ArrayLike, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Advantages by the combination named `combine` (`rewards.combine` in a recipe)."""
    if combine not in COMBINERS:
        raise LwzError(None, "rewards.combine", f"unknown combination {combine!r}; allowed: "
                       f"{', '.join(COMBINERS)}" + did_you_mean(combine, COMBINERS))
    return COMBINERS[combine](rewards, weights, group, eps)

