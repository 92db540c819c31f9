"""Rollout engines on ranks of their own (`rollout.colocate: false`) over gloo: the actor's world, the engine
ranks' world and the bridge between them (lwz/runtime/bridge.py), in the loop of tests/e2e/test_train_loop.py.

- sync on the split layout (2 actor ranks + 2 engine ranks) gives the colocated layout's metrics (2 ranks,
  each with an actor shard and an engine): the same engines, prompts and seeds, only in other processes;
- one_step_off (2 data-parallel actor ranks + 1 engine rank) learns to the learning test's threshold while every batch
  after the first is one update stale (decoupled PPO: the ratio clipped around the current actor, the gap
  to the engine that sampled the tokens weighted by TIS), and the run rewound to a checkpoint resumes to the same
  metrics as the uninterrupted one (the checkpoint keeps the batch generated ahead);
- async (the same layout, max_staleness 2; the long-tailed model) learns to the same threshold while its batches mix tokens of two
  versions (samples continued across an in-flight update), and a run SIGKILLed after a checkpoint resumes to
  the uninterrupted run's metrics (the checkpoint keeps the batch received ahead and the engines' pool).
"""

from __future__ import annotations

import pytest
from helpers import (COMPARED, ONE_STEP_OFF, assert_resumed_equal, kill_after_checkpoint, learning_recipe, lwz_started,
                     metrics, rewind, run_to_end)

pytestmark = pytest.mark.slow

SPLIT = ("rollout.colocate=false", "rollout.engines=2")
OVERLONG = ("rewards.terms=[{name: length, params: {measure: response, l_max: 40}}, "
            "{name: overlong, params: {buffer: 16}}]")


def test_sync_on_the_split_layout_matches_the_colocated_layout(tmp_path, peaked_qwen2):
    """Data parallelism (2 actor ranks) with the overlong penalty next to the length reward; the colocated
    run is also tests/e2e/test_layouts.py's data-parallel layout (the engines stay in sync with the actor)."""
    runs = {}
    for name, overrides in (("colocated", ("cluster.gpus_per_node=2",)), ("split", ("cluster.gpus_per_node=4", *SPLIT))):
        (tmp_path / name).mkdir()
        recipe = learning_recipe(tmp_path / name, peaked_qwen2, steps=2, run=name)
        out = run_to_end("run", str(recipe), "actor.tp=1", "schedule.prompts_per_step=2", OVERLONG, *overrides)
        runs[name] = metrics(tmp_path / name / "runs" / "learn" / name)
        for row in runs[name]:
            assert row["rollout/logprob_diff"] < 1e-3 and abs(row["rollout/kl"]) < 1e-4, row
            assert row["actor/grad_norm"] > 0 and "reward/overlong" in row
        if name == "split":
            plan = (tmp_path / name / "runs" / "learn" / name / "plan.txt").read_text()
            assert "2 engine(s) x tp 1, on GPUs of their own (ranks 2-3), sync" in plan, plan
            assert "INFO" not in out
    assert [r["step"] for r in runs["split"]] == [1, 2]
    for colocated, split in zip(runs["colocated"], runs["split"]):
        for key in COMPARED:
            assert split[key] == pytest.approx(colocated[key], abs=1e-5), (split["step"], key)
        assert split["rollout/staleness"] == 0
    assert runs["split"][0]["sync/gb_per_s"] > 0   # no sync after the last step: the engines are done


def straight_run(tmp_path, model, overrides) -> tuple:
    """The learning recipe (8 prompts a step, a checkpoint every 3) to its end: run folder, metrics, plan."""
    (tmp_path / "a").mkdir()
    run_to_end("run", str(learning_recipe(tmp_path / "a", model, prompts_per_step=8, save_every=3, run="straight")),
               *overrides)
    folder = tmp_path / "a" / "runs" / "learn" / "straight"
    return folder, metrics(folder), (folder / "plan.txt").read_text()


def test_one_step_off_learns_and_resumes(tmp_path, peaked_qwen2):
    folder, expected, plan = straight_run(tmp_path, peaked_qwen2, ONE_STEP_OFF)
    assert "tp 1 x cp 1 x dp 2 x pp 1" in plan and "on GPUs of their own (rank 2), one_step_off" in plan, plan
    assert [m["rollout/staleness"] for m in expected] == [0, 1, 1, 1, 1, 1]   # exactly one update behind
    assert all(m["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6) for m in expected)  # clipped around pi_actor
    assert all(m["actor/correction_weight_mean"] != pytest.approx(1.0, abs=1e-4) for m in expected[1:])  # pi / pi_engine
    rewards = [m["reward/length"] for m in expected]
    assert sum(rewards[-3:]) / 3 > rewards[0] + 0.15, rewards

    rewind(folder, 3)   # as a SIGKILL right after the step-3 checkpoint (which keeps the batch generated ahead)
    assert_resumed_equal(folder, expected, COMPARED)


def test_async_learns_with_in_flight_updates_and_resumes_after_sigkill(tmp_path, tailed_qwen2):
    """The learning recipe on the long-tailed model (peaked_qwen2 that ends its responses): groups finish at
    different engine steps, so a batch is delivered while others are half-written and continue after the update.
    At half the recipe's learning rate: at 2e-4 this model's responses, two updates stale, overshoot the target
    to empty ones by step 5 under tis and icepop alike (measured), an optimisation matter, not the hand-over's."""
    overrides = (*ONE_STEP_OFF[:-1], "rollout.mode=async", "actor.lr=1.0e-4")
    _, expected, plan = straight_run(tmp_path, tailed_qwen2, overrides)
    assert "on GPUs of their own (rank 2), async" in plan and "the engines 1 batch(es) ahead" in plan, plan
    staleness = [m["rollout/staleness"] for m in expected]
    assert staleness[0] == 0 and max(staleness) == 2 and all(s >= 1 for s in staleness[1:]), staleness
    assert sum(m["rollout/mixed_version_samples"] for m in expected) > 0
    assert sum(m["rollout/inflight_updates"] for m in expected) > 0
    assert all(m["rollout/off_policy_token_fraction"] == 1.0 for m in expected[1:])
    rewards = [m["reward/length"] for m in expected]
    assert sum(rewards[-3:]) / 3 > rewards[0] + 0.15, rewards

    killed = learning_recipe(tmp_path, tailed_qwen2, prompts_per_step=8, save_every=3, run="killed")
    folder = tmp_path / "runs" / "learn" / "killed"
    kill_after_checkpoint(lwz_started("run", str(killed), *overrides), folder)   # the engines a batch ahead
    assert (folder / "ckpt" / "latest").read_text().strip() == "step-00000003"
    assert_resumed_equal(folder, expected,
                         (*COMPARED, "rollout/staleness", "rollout/mixed_version_samples", "rollout/inflight_updates"))
