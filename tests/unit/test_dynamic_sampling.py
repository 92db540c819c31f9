"""Dynamic sampling: zero-variance groups never reach the update while rounds remain; the batch keeps its size."""

from __future__ import annotations

import pytest

from lwz.algo.dynamic_sampling import concat, fill_with_signal, groups_of, signal_groups
from lwz.batch import RolloutBatch


def scored(rewards_per_group: list[list[float]], tag: str) -> RolloutBatch:
    """A batch of groups with these rewards and GRPO advantages (reward minus the group mean)."""
    flat = [(g, k, r) for g, rs in enumerate(rewards_per_group) for k, r in enumerate(rs)]
    means = [sum(rs) / len(rs) for rs in rewards_per_group]
    return RolloutBatch(prompt_index=[g for g, _, _ in flat], group=[g for g, _, _ in flat],
                        samples=[{"tag": f"{tag}{g}"} for g, _, _ in flat], prompt_ids=[[1]] * len(flat),
                        response_ids=[[2, 3]] * len(flat), texts=[f"{tag}{g}.{k}" for g, k, _ in flat],
                        truncated=[False] * len(flat), rollout_logprobs=[[-1.0, -1.0]] * len(flat),
                        rewards={"length": [r for _, _, r in flat]},
                        advantages=[r - means[g] for g, _, r in flat])


def test_zero_variance_groups_are_replaced_by_groups_with_signal():
    first = scored([[1, 1], [0, 1], [0, 0]], "a")          # groups 0 and 2 have no signal
    rounds = iter([scored([[1, 1]], "b"), scored([[0, 1], [1, 0]], "c")])
    batch, stats = fill_with_signal(first, lambda n: next(rounds), groups_wanted=3, max_rounds=3)
    assert len(groups_of(batch)) == 3 and signal_groups(batch) == groups_of(batch)
    assert [batch.samples[i]["tag"] for i in range(0, len(batch), 2)] == ["a1", "c0", "c1"]
    assert stats.dropped_groups == 3 and stats.rounds == 2 and stats.filler_groups == 0
    assert batch.group == [0, 0, 1, 1, 2, 2] and not batch.loss_mask


def test_out_of_rounds_the_batch_is_filled_out_of_the_loss():
    first = scored([[1, 1], [0, 1], [0, 0]], "a")
    batch, stats = fill_with_signal(first, lambda n: scored([[5, 5]] * n, "b"), groups_wanted=3, max_rounds=1)
    assert len(batch) == 6 and stats.rounds == 1 and stats.filler_groups == 2
    trained = [i for i in range(len(batch)) if batch.in_loss(i)]
    assert trained == [0, 1] and {batch.samples[i]["tag"] for i in trained} == {"a1"}
    assert all(batch.advantages[i] == 0 for i in range(len(batch)) if not batch.in_loss(i))


def test_concat_renumbers_groups_and_keeps_per_sequence_fields():
    a, b = scored([[0, 1]], "a"), scored([[1, 0], [2, 2]], "b")
    b.loss_mask = [True, False, True, True]
    merged = concat([a, b])
    assert merged.group == [0, 0, 1, 1, 2, 2] and merged.loss_mask == [True, True, True, False, True, True]
    assert merged.rewards["length"] == [0, 1, 1, 0, 2, 2] and len(merged.rollout_logprobs) == 6
    assert merged.advantages == pytest.approx([-0.5, 0.5, 0.5, -0.5, 0, 0])
