"""One test per resolver check: each rejects with the key and the numbers."""

from pathlib import Path

import pytest

from lwz.errors import LwzError
from lwz.plan.render import render_plan
from lwz.plan.resolve import resolve
from lwz.recipe.load import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
PAPER = RECIPES / "longwriter_zero.yaml"


def plan(*overrides, recipe=PAPER):
    return resolve(load_recipe(recipe, overrides))


def rejects(key, *fragments, overrides=(), recipe=PAPER):
    with pytest.raises(LwzError) as info:
        plan(*overrides, recipe=recipe)
    assert info.value.key == key, str(info.value)
    for fragment in fragments:
        assert fragment in info.value.message, str(info.value)
    assert "\n" not in str(info.value)


def test_paper_plan_shape():
    p = plan()
    assert (p.world_size, p.tp, p.pp, p.dp, p.cp) == (64, 8, 2, 4, 1)
    assert p.engine("rollout").count == 16 and p.engine("rollout").ranks[1] == [4, 5, 6, 7]
    assert p.engine("writing_rm") is None and [m.stage for m in p.reward_models["writing_rm"]] == [0, 1]
    assert p.sequences_per_step == 2048 and p.sequences_per_dp_rank == 512
    assert p.collective_timeout_s == 1800 + (1024 + 14000) // 5 + 1  # 30 min + the longest sequence at 5 tok/s
    assert plan("cluster.collective_timeout_s=45").collective_timeout_s == 45


def test_rank_grid_follows_megatron_order():
    p = plan()
    assert p.coords[9].tp == 1 and p.coords[9].dp == 1 and p.coords[9].pp == 0
    assert p.coords[32].pp == 1 and p.coords[32].dp == 0
    assert p.groups["tp"][0] == list(range(8))
    assert p.groups["dp"][0] == [0, 8, 16, 24]
    assert p.groups["pp"][0] == [0, 32]
    assert len(p.groups["mp"]) == 4 and p.groups["mp"][0] == list(range(8)) + list(range(32, 40))


def test_heads_not_divisible_by_tp():
    rejects("actor.tp", "num_attention_heads=40", "allowed: 1, 2, 4, 5, 8",
            overrides=["actor.tp=16", "actor.pp=1", "cluster.nodes=16"])


def test_kv_groups_not_divisible_by_tp():
    rejects("actor.tp", "num_key_value_heads=8", overrides=["actor.tp=10", "actor.pp=1", "cluster.nodes=10",
                                                            "cluster.gpus_per_node=4", "actor.sequence_parallel=false"])


def test_layers_not_divisible_by_pp():
    rejects("actor.pp", "num_layers=64", overrides=["actor.pp=3", "cluster.nodes=6", "cluster.gpus_per_node=4",
                                                    "actor.tp=8"])


def test_world_size_not_matching_the_grid():
    rejects("actor", "world size 60", "8 x 2 x 1 = 16", overrides=["cluster.gpus_per_node=6", "cluster.nodes=10"])


def test_sequences_not_divisible_into_mini_batches():
    rejects("algo.mini_batches", "64 x 32 = 2048", "3 mini-batches", overrides=["algo.mini_batches=3"])


def test_sequences_not_divisible_across_dp():
    rejects("schedule.prompts_per_step", "data-parallel size 4", overrides=["schedule.prompts_per_step=3",
                                                                           "rollout.group_size=6"])


def test_micro_batch_smaller_than_one_sequence():
    rejects("actor.micro_batch_tokens", "15024", overrides=["actor.micro_batch_tokens=8192"])


def test_prompt_plus_max_tokens_over_context():
    rejects("rollout.max_tokens", "exceeds the model's context of 131072",
            overrides=["rollout.max_tokens=140000", "actor.micro_batch_tokens=200000"])


def test_settings_the_runtime_does_not_do_yet_are_rejected():
    for gone in ("colocate=false", "tp=8", "engines=8", "gpu_memory_utilization=0.3", "batch_size=16", "timeout_s=60"):
        rejects(f"rewards.terms.1.params.{gone.split('=')[0]}", "unknown parameter of the 'writing_rm' reward",
                overrides=[f"rewards.terms.1.params.{gone}"])  # the reward model is no engine any more
    split = ["rollout.colocate=false", "rollout.engines=8"]
    rejects("rollout.mode", "partial rollout on engines of their own is not supported yet",
            overrides=[*split, "rollout.mode=partial"])
    rejects("schedule.eval_every", "not supported yet", overrides=[*split, "schedule.eval_every=5"])
    rejects("actor.cp", "context parallelism is not supported yet", overrides=["actor.cp=2"])
    rejects("model.dtype", "fp16 is not supported yet", overrides=["model.dtype=fp16"])


def test_partial_rollout_settings_need_a_pooled_mode():
    for override in ("rollout.over_sample=2", "rollout.max_staleness=3"):
        rejects(override.split("=")[0], "applies to the partial and async rollouts only", overrides=[override])
    rejects("rollout.stale_tokens", "partial, one-step-off and async rollouts only",
            overrides=["rollout.stale_tokens=importance"])
    rejects("algo.dynamic_sampling", "needs rollout.mode=partial", overrides=["algo.dynamic_sampling=true"])
    rejects("algo.max_sampling_rounds", "applies to dynamic sampling only", overrides=["algo.max_sampling_rounds=4"])
    recipe = load_recipe(PAPER, ["rollout.mode=partial", "rollout.over_sample=1.25", "rollout.max_staleness=2"])
    text = render_plan(recipe, resolve(recipe))
    assert "partial rollout: 80 groups in flight for 64 (those done in the engine step that fills the batch join " \
           "it, 1 at a time), carried samples at most 2 update(s) stale, stale tokens mask" in text


def test_sequence_parallel_plans_on_cpu():
    p = plan("actor.tp=2", "actor.sequence_parallel=true", "cluster.gpus_per_node=2", recipe=RECIPES / "tiny.yaml")
    assert p.tp == 2 and p.device == "cpu"


def test_time_limit_must_be_a_slurm_time():
    rejects("cluster.time", "not a SLURM time limit", overrides=["cluster.time=48h"])
    for good in ("90", "30:00", "48:00:00", "2-00:00:00", "2-12", "1-06:30"):
        assert plan(f"cluster.time={good}").world_size == 64


def test_colocated_engine_count_must_cover_the_actor():
    rejects("rollout.engines", "use 16 or null", overrides=["rollout.engines=4"])


def test_rollout_tp_must_fit_the_heads():
    rejects("rollout.tp", "num_attention_heads=40", overrides=["rollout.tp=16"])


def test_sequence_parallel_needs_tp():
    rejects("actor.sequence_parallel", "tp > 1", overrides=["actor.tp=1", "actor.pp=1"])


def test_plan_that_does_not_fit_is_rejected_with_numbers():
    rejects("cluster.gpu_memory_gib", "start-up phase needs", "more than the 79.2 GiB usable of a 80 GiB card",
            overrides=["rollout.gpu_memory_utilization=0.9"])


def test_engine_that_cannot_hold_one_group_is_rejected():
    rejects("rollout.gpu_memory_utilization", "KV cache", "budget 31.7 GiB of 79.2 GiB usable",
            overrides=["rollout.gpu_memory_utilization=0.4"])


ASYNC_RECIPE = RECIPES / "longwriter_zero_async.yaml"


@pytest.mark.parametrize("recipe", [PAPER, ASYNC_RECIPE], ids=["colocated", "split"])
def test_the_paper_recipes_fit_every_phase_and_their_nodes(recipe):
    from lwz.plan.phases import CUDA_CONTEXT, NCCL_COMMUNICATOR

    loaded = load_recipe(recipe)
    p = resolve(loaded)
    assert p.card.usable == int(80 * (1 << 30) * 0.99)
    phases = {"start-up", "reward", "update", "sync", "save"} | ({"rollout"} if recipe == PAPER else set())
    assert set(k for k in p.phase_peak if not k.endswith(" GPUs")) == phases
    assert all(peak <= p.card.usable for peak in p.phase_peak.values())
    assert p.card.overhead == CUDA_CONTEXT + p.card.communicators * NCCL_COMMUNICATOR
    assert p.host.total <= loaded.cluster.mem_gb * 1e9 and p.host.save > 0 and p.host.offloaded > 0
    text = render_plan(loaded, p)
    assert "shows 79.2 GiB to CUDA" in text and "(models, not measured)" in text
    assert f"of {loaded.cluster.mem_gb} GB (cluster.mem_gb)" in text and "processes 4 GiB each (a model)" in text


def test_phases_by_hand():
    """The paper's colocated plan, each phase from its parts (lwz.plan.phases' module doc)."""
    from lwz.actor.vocab import padded_vocab_size
    from lwz.plan.memory import DTYPE_BYTES
    from lwz.plan.phases import PROCESS_HOST

    recipe = load_recipe(PAPER)
    p = resolve(recipe)
    static = max(s.static for s in p.actor_memory)
    rollout, overhead = p.engine("rollout").memory, p.card.overhead
    rm = max(m.total for m in p.reward_models["writing_rm"])
    assert p.card.communicators == 1 + 4 + 2   # world, tp, pp, dp, model-parallel; the engine's world and tp
    assert p.phase_peak["rollout"] == static + rollout.budget + overhead == p.phase_peak["start-up"]
    assert p.phase_peak["reward"] == static + rm + overhead
    assert p.phase_peak["update"] == max(s.total for s in p.actor_memory) + overhead
    embedding = 152064 * 5120 * 2   # the largest item the sync gathers whole, then its tp-4 shard in vLLM
    assert p.phase_peak["sync"] == static + rollout.weights + embedding + embedding // 4 + overhead
    assert p.phase_peak["save"] == static + padded_vocab_size(152064, 8) * 5120 // 8 * DTYPE_BYTES["bf16"] + overhead
    # node 0 holds ranks 0-7: stage 0, data-parallel rank 0: the save gathers their fp32 params and Adam states
    stage0 = p.actor_memory[0].params
    assert p.host.node == 0 and p.host.save == 8 * (2 * 12 + 2) * stage0 and p.host.processes == 8 * PROCESS_HOST["gpu"]
    assert p.host.offloaded == 8 * p.reward_models["writing_rm"][0].weights
    assert p.host.batches == 8 * 2048 * (1024 + 14000) * 20
    assert p.host.backups == 8 * rollout.weights   # the engine sleeps at level 1 for a save: pinned weight backups
    assert resolve(load_recipe(ASYNC_RECIPE)).host.backups == 0   # engines on GPUs of their own stay awake


def test_a_smaller_card_or_less_host_memory_is_rejected_naming_the_phase():
    rejects("cluster.gpu_memory_gib", "the start-up phase needs", "usable of a 40 GiB card",
            overrides=["cluster.gpu_memory_gib=40"])
    rejects("cluster.mem_gb", "the save phase needs 669 GB of host memory on node 0", "more than cluster.mem_gb = 256",
            "save 426", overrides=["cluster.mem_gb=256"])
    rejects("cluster.mem_gb", "the save phase needs", overrides=["cluster.mem_gb=256"], recipe=ASYNC_RECIPE)
    assert any("cluster.mem_gb is unset" in w for w in plan("cluster.mem_gb=null").warnings)


def test_missing_architecture_facts():
    rejects("model.arch.num_layers", "config.json", overrides=["model.arch.num_layers=null"])


def test_the_reward_model_is_scored_on_the_actor_grid():
    from lwz.plan.memory import DTYPE_BYTES, stage_param_count
    from lwz.recipe.schema import ArchCfg

    recipe = load_recipe(PAPER)
    p = resolve(recipe)
    rm_arch = ArchCfg(**recipe.rewards.terms[1].params["arch"])
    first = p.reward_models["writing_rm"][0]
    assert first.params == stage_param_count(rm_arch, 8, 2, 0, scalar_head=True)
    assert first.weights == first.params * DTYPE_BYTES["bf16"]
    assert p.phase_peak["reward"] == max(a.static for a in p.actor_memory) + first.total + p.card.overhead
    rejects("actor.tp", "reward model's num_key_value_heads=4", overrides=["rewards.terms.1.params.arch.num_key_value_heads=4"])
    rejects("actor.pp", "reward model's num_layers=81", overrides=["rewards.terms.1.params.arch.num_layers=81"])


def test_tiny_cpu_plan_runs_one_engine_per_rank_with_tp2():
    p = plan("actor.tp=2", "cluster.gpus_per_node=2", recipe=RECIPES / "tiny.yaml")
    assert p.device == "cpu" and p.dp == 1 and p.engine("rollout").count == 2


def test_the_cpu_kv_cache_is_host_memory_of_the_plan_and_cpu_only():
    """rollout.cpu_kv_cache_gib reaches the plan's host memory and its rollout phase on CPU; a GPU refuses it."""
    tiny = RECIPES / "tiny.yaml"
    default, larger = plan(recipe=tiny), plan("rollout.cpu_kv_cache_gib=3", recipe=tiny)
    assert larger.host.total - default.host.total == 2 * (1 << 30)
    assert larger.phase_peak["rollout"] - default.phase_peak["rollout"] == 2 * (1 << 30)
    rejects("rollout.cpu_kv_cache_gib", "applies on CPU only", overrides=["rollout.cpu_kv_cache_gib=3"])


ASYNC = RECIPES / "longwriter_zero_async.yaml"


def test_the_split_recipe_plans_engine_only_ranks_on_64_gpus():
    p = plan(recipe=ASYNC)
    assert p.world_size == 64 and p.actor_world == 32 and (p.tp, p.pp, p.dp) == (8, 2, 2)
    rollout = p.engine("rollout")
    assert not rollout.colocated and rollout.ranks == [list(range(32 + 4 * e, 36 + 4 * e)) for e in range(8)]
    assert p.reward_models["writing_rm"] and p.engine("writing_rm") is None   # on the actor's grid
    assert [p.role(r) for r in (0, 31, 32, 63)] == ["actor", "actor", "rollout", "rollout"]
    assert set(p.phase_peak) == {"start-up", "reward", "update", "sync", "save", "rollout GPUs"}
    assert p.phase_peak["rollout GPUs"] == int(0.9 * p.card.usable) + (1 << 30) + 3 * (128 << 20)  # budget + context + NCCL
    text = render_plan(load_recipe(ASYNC), p)
    assert "on GPUs of their own (ranks 32-63), one_step_off" in text
    assert "   32    4   0  rollout |   -   -   -   - |        0.0\n" in text
    assert "peak per GPU of the rollout engines (every phase): 72.7 of 79.2 GiB usable" in text


def test_split_layout_rules():
    split = ["rollout.colocate=false"]
    rejects("rollout.engines", "say how many engines", overrides=split)
    rejects("rollout.engines", "leave none for the actor", overrides=[*split, "rollout.engines=16"])
    rejects("rollout.tp", "spans two nodes", overrides=[*split, "rollout.engines=1", "rollout.tp=8", "actor.pp=1",
                                                        "cluster.gpus_per_node=4", "schedule.prompts_per_step=48"])
    rejects("rollout.mode", "needs the rollout engines on GPUs of their own", overrides=["rollout.mode=one_step_off",
                                                                                       "rollout.stale_tokens=importance"])
    rejects("rollout.stale_tokens", "set rollout.stale_tokens=recompute", recipe=ASYNC,
            overrides=["rollout.stale_tokens=mask"])
    rejects("algo.rollout_correction", "set it to tis", recipe=ASYNC, overrides=["algo.rollout_correction=none"])
    p = plan(*split, "rollout.engines=4", "rollout.tp=8")   # sync on the split layout: 32 + 32 GPUs
    assert p.actor_world == 32 and p.role(32) == "rollout" and p.engine("rollout").count == 4


def test_a_mode_named_alone_takes_working_defaults():
    """one_step_off alone: recompute the stale tokens' old logprobs and correct with tis; any correction of the
    family satisfies recompute; the other modes keep mask and no correction."""
    tiny = RECIPES / "tiny.yaml"
    alone = ["rollout.colocate=false", "rollout.engines=1", "rollout.mode=one_step_off", "cluster.gpus_per_node=2"]
    recipe = load_recipe(tiny, alone)
    assert (recipe.rollout.stale_tokens, recipe.algo.rollout_correction) == ("recompute", "tis")
    assert resolve(recipe).actor_world == 1
    for kind in ("icepop", "seq_tis", "seq_mask_tis"):
        chosen = load_recipe(tiny, [*alone, f"algo.rollout_correction={kind}"])
        assert chosen.algo.rollout_correction == kind and resolve(chosen).actor_world == 1
    importance = load_recipe(tiny, [*alone, "rollout.stale_tokens=importance"])
    assert importance.algo.rollout_correction == "none"
    for mode in ("sync", "partial"):
        recipe = load_recipe(tiny, [f"rollout.mode={mode}"])
        assert (recipe.rollout.stale_tokens, recipe.algo.rollout_correction) == ("mask", "none")
    assert (recipe.rollout.over_sample, recipe.rollout.max_staleness) == (1.0, 1)   # partial's pool


def test_async_named_alone_takes_working_defaults():
    """async alone (the acceptance's command line): recompute with tis, two groups in flight per group
    trained, at most 2 updates stale (the engines one batch ahead); the plan says so."""
    alone = ["rollout.colocate=false", "rollout.engines=1", "rollout.mode=async", "cluster.gpus_per_node=2"]
    tiny = RECIPES / "tiny.yaml"
    recipe = load_recipe(tiny, alone)
    assert (recipe.rollout.stale_tokens, recipe.algo.rollout_correction) == ("recompute", "tis")
    assert (recipe.rollout.over_sample, recipe.rollout.max_staleness) == (2.0, 2)
    text = render_plan(recipe, resolve(recipe))
    assert "async rollout: 8 groups in flight for 4 (those done in the engine step that fills the batch join it, 1 " \
           "at a time), carried samples at most 2 update(s) stale, the engines 1 batch(es) ahead, stale tokens recompute" \
           in text, text
    rejects("rollout.mode", "needs the rollout engines on GPUs of their own", recipe=tiny, overrides=["rollout.mode=async"])
    rejects("rollout.max_staleness", "async needs at least 1", recipe=ASYNC,
            overrides=["rollout.mode=async", "rollout.max_staleness=0"])
    rejects("rollout.stale_tokens", "async samples every token at least one update behind", recipe=ASYNC,
            overrides=["rollout.mode=async", "rollout.stale_tokens=mask"])
    rejects("algo.dynamic_sampling", "needs rollout.mode=partial", recipe=ASYNC,
            overrides=["rollout.mode=async", "algo.dynamic_sampling=true"])
    assert "rollout correction seq_mask_tis (cap 2, band [0.5, 5])" in render_plan(
        load_recipe(tiny, [*alone, "algo.rollout_correction=seq_mask_tis"]),
        resolve(load_recipe(tiny, [*alone, "algo.rollout_correction=seq_mask_tis"])))


def test_replay_rules(tmp_path):
    """rollout.replay needs a saved batch for every step, no evaluation (no engines) and no rollout.only; a
    replayed plan has no rollout engines at all."""
    rejects("rollout.replay", f"{tmp_path} has no saved batch of step 1", overrides=[f"rollout.replay={tmp_path}"])
    (tmp_path / "rollouts").mkdir()
    for step in range(1, 3):
        (tmp_path / "rollouts" / f"step-{step:08d}.pt").write_bytes(b"")
    tiny = RECIPES / "tiny.yaml"
    replay = [f"rollout.replay={tmp_path}", "schedule.steps=2", "schedule.eval_every=0"]
    rejects("rollout.only", "cannot also be rollout-only", recipe=tiny, overrides=[*replay, "rollout.only=true"])
    rejects("schedule.eval_every", "a replayed run has none of", recipe=tiny, overrides=[*replay[:2], "schedule.eval_every=1"])
    recipe = load_recipe(tiny, [*replay, "rollout.colocate=false", "rollout.engines=1"])
    p = resolve(recipe)
    assert p.engines == [] and p.actor_world == recipe.cluster.gpus_per_node   # the engines' GPUs go to the actor
    assert f"rollout   replay of {tmp_path} (its saved batches" in render_plan(recipe, p)
