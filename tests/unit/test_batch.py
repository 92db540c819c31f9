import torch

from lwz.batch import RolloutBatch


def make(n=4):
    return RolloutBatch(prompt_index=list(range(n)), group=[i // 2 for i in range(n)], samples=[{}] * n,
                        prompt_ids=[[1, 2]] * n, response_ids=[[3] * (i + 1) for i in range(n)],
                        texts=[str(i) for i in range(n)], truncated=[False] * n,
                        rollout_logprobs=[[-1.0] * (i + 1) for i in range(n)],
                        rewards={"length": [0.1, 0.2, 0.3, 0.4][:n]})


def test_select_and_shard_slice_every_field():
    b = make().shard(1, 2)                       # lengths 3, 4, 5, 6: {6, 3} and {5, 4}, 9 tokens each
    assert b.prompt_index == [1, 2] and b.rewards["length"] == [0.2, 0.3] and b.texts == ["1", "2"]
    assert make().shard(0, 2).prompt_index == [0, 3]
    assert [c.prompt_index for c in make().chunks(2)] == [[0, 1], [2, 3]]


def test_micro_batches_respect_the_padded_token_budget_longest_first():
    b = make()                                   # lengths 3, 4, 5, 6
    assert b.micro_batches(12) == [[3, 2], [1, 0]]
    assert b.micro_batches(10) == [[3], [2, 1], [0]]
    assert b.micro_batches(100) == [[3, 2, 1, 0]]


def test_padded_marks_response_labels():
    b = make()
    p = b.padded([0, 2])
    assert p.tokens.tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 3, 3]]
    assert p.response_mask.tolist() == [[0, 1, 0, 0], [0, 1, 1, 1]]
    values = p.scatter([torch.tensor([5.0]), torch.tensor([1.0, 2.0, 3.0])])
    assert values.tolist() == [[0, 5, 0, 0], [0, 1, 2, 3]]
    assert [v.tolist() for v in p.gather(values)] == [[5.0], [1.0, 2.0, 3.0]]
