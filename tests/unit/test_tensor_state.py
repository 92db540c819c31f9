"""A checkpoint's state with its number lists as tensors (lwz.tensor_state): exact both ways."""

import math

import torch

from lwz.batch import RolloutBatch
from lwz.tensor_state import pack, unpack


def test_number_lists_become_tensors_and_come_back_exactly():
    state = {"step": 3, "pool": [{"uid": 7, "prompt_ids": [1, 2, 151643], "samples": [
        {"response_ids": [5, 6], "logprobs": [-0.1, -1e-300, -math.inf, -2.5e-8], "versions": [2, 3],
         "finish_reason": None}, {"response_ids": [], "logprobs": [], "versions": [], "finish_reason": "stop"}]}],
        "flags": [True, False], "mixed": [1, 2.5], "name": "x"}
    packed = pack(state)
    sample = packed["pool"][0]["samples"][0]
    assert sample["response_ids"].dtype == torch.int64 and sample["logprobs"].dtype == torch.float64
    assert packed["pool"][0]["prompt_ids"].tolist() == [1, 2, 151643]
    assert packed["flags"] == [True, False] and packed["mixed"] == [1, 2.5]   # bools and mixed lists stay lists
    assert unpack(packed) == state
    assert [type(x) for x in unpack(packed)["pool"][0]["samples"][0]["logprobs"]] == [float] * 4


def test_a_batch_generated_ahead_survives_a_tensor_file(tmp_path):
    batch = RolloutBatch(prompt_index=[0, 0], group=[0, 0], samples=[{"prompt": "p", "length_range": [1, 2]}] * 2,
                         prompt_ids=[[1, 2], [1, 2]], response_ids=[[3], [4, 5]], texts=["a", "b c"],
                         truncated=[False, True], rollout_logprobs=[[-0.5], [-0.25, -1.0 / 3]],
                         rewards={"length": [0.5, 1.0]}, advantages=[-1.0, 1.0], stale_tokens=[1, 2])
    torch.save(pack({"batch": batch.to_state()}), tmp_path / "state.pt")
    again = RolloutBatch.from_state(unpack(torch.load(tmp_path / "state.pt", weights_only=True))["batch"])
    assert again == batch
