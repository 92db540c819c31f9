"""Rollout replay (lwz/rollout/replay.py) on the learning recipe (tests/recipes/learn.yaml, peaked_qwen2):
a run keeps its batches as tensor files, the same recipe replayed from them trains without engines to the
same update metrics, and a rollout-only run generates and scores without training."""

from __future__ import annotations

import pytest
import torch
from helpers import learning_recipe, lwz, metrics, run_to_end

pytestmark = pytest.mark.slow


def test_replay_trains_as_the_saved_run_and_rollout_only_does_not_train(tmp_path, peaked_qwen2):
    recipe = learning_recipe(tmp_path, peaked_qwen2, steps=2, run="saved")
    runs = tmp_path / "runs" / "learn"
    run_to_end("run", str(recipe), "logging.save_rollouts=true")
    saved = torch.load(runs / "saved" / "rollouts" / "step-00000001.pt", weights_only=True)
    assert sorted(p.name for p in (runs / "saved" / "rollouts").iterdir()) == \
        [f"step-0000000{s}.pt" for s in (1, 2)]
    batch = saved["batch"]
    assert isinstance(batch["response_ids"][0], torch.Tensor) and isinstance(batch["rollout_logprobs"][0], torch.Tensor)
    assert batch["versions"][0].tolist() == [0] * len(batch["response_ids"][0])   # step 1: the untrained weights
    assert len(batch["advantages"]) == len(batch["response_ids"]) == 32 and "length" in batch["rewards"]

    run_to_end("run", str(recipe), f"rollout.replay={runs / 'saved'}", "logging.run=replayed")
    plan = (runs / "replayed" / "plan.txt").read_text()
    assert f"rollout   replay of {runs / 'saved'}" in plan and "vllm" not in plan, plan
    original, replayed = metrics(runs / "saved"), metrics(runs / "replayed")
    assert [m["step"] for m in replayed] == [1, 2]
    compared = [k for k in original[0] if k.startswith(("actor/", "reward/", "rollout/"))]
    assert "actor/loss" in compared and "actor/grad_norm" in compared
    for want, got in zip(original, replayed):
        for key in compared:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (got["step"], key)

    run_to_end("run", str(recipe), "rollout.only=true", "logging.save_rollouts=true", "logging.run=only")
    only = metrics(runs / "only")   # two steps: the engine keeps the starting weights across the sync
    assert [m["step"] for m in only] == [1, 2] and (runs / "only" / "rollouts" / "step-00000002.pt").is_file()
    assert only[0]["reward/length"] == pytest.approx(original[0]["reward/length"], abs=1e-9)
    assert not any(k.startswith("actor/") for k in only[0]) and not list((runs / "only" / "ckpt").glob("step-*"))
    again = torch.load(runs / "only" / "rollouts" / "step-00000001.pt", weights_only=True)["batch"]
    assert [r.tolist() for r in again["response_ids"]] == [r.tolist() for r in batch["response_ids"]]

    short = lwz("run", str(recipe), f"rollout.replay={runs / 'only'}", "schedule.steps=3", "--dry-run")
    assert short.returncode == 2 and len(short.stderr.strip().splitlines()) == 1, short.stderr
    assert "rollout.replay" in short.stderr and "has no saved batch of step 3" in short.stderr
