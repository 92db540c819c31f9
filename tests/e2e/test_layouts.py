"""Every parallelism/placement layout the plan accepts runs the loop, with weight sync intact.

Two GRPO steps of the learning recipe (tests/e2e/test_train_loop.py), 2 prompts a step, over 2 CPU ranks in each layout the
plan accepts on top of the TP=1 / TP=2 learning runs: pipeline parallelism with the writing RM scored on
the same PP 2 grid next to per-rank rollout engines; sequence parallelism with truncated importance sampling and a
rollout engine spanning both ranks; data parallelism with the overlong penalty is the colocated run of
tests/e2e/test_split_layout.py (which the split layout must reproduce). In every layout the engine's logprobs of the sampled
tokens equal the actor's at both steps (`rollout/logprob_diff`), i.e. the update reached the engines.
What the plan rejects instead (fp16, context parallelism) is in tests/unit/test_plan_rules.py.
"""

from __future__ import annotations

import pytest
from helpers import learning_recipe, metrics, run_to_end

pytestmark = pytest.mark.slow

WITH_RM = ("rewards.terms=[{name: length, params: {measure: response, l_max: 40}}, "
           "{name: writing_rm, params: {model: '${asset:tiny-writing-rm}', max_length: 256}}]")
LAYOUTS = {  # two runs here, a third in tests/e2e/test_split_layout.py (2 cores: each run starts two ranks with engines)
    "pp2-writing-rm": ["actor.pp=2", WITH_RM],
    "tp2-sequence-parallel-tis-rollout-tp2": ["actor.tp=2", "actor.sequence_parallel=true", "rollout.tp=2",
                                              "algo.rollout_correction=tis"],
}


@pytest.mark.parametrize("overrides", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_layout_runs_and_keeps_the_engines_in_sync(overrides, tmp_path, peaked_qwen2):
    recipe = learning_recipe(tmp_path, peaked_qwen2, steps=2)
    run_to_end("run", str(recipe), "cluster.gpus_per_node=2", "schedule.prompts_per_step=2", *overrides)
    rows = metrics(tmp_path / "runs" / "learn" / "r")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["rollout/logprob_diff"] < 1e-3 and abs(row["rollout/kl"]) < 1e-4, row
        assert row["actor/grad_norm"] > 0
    if "algo.rollout_correction=tis" in overrides:
        assert all(r["actor/correction_weight_mean"] == pytest.approx(1.0, abs=1e-3) for r in rows)
    if any("overlong" in o for o in overrides):  # 48-token responses, punished from 32 tokens on
        assert all(-1.0 <= r["reward/overlong"] <= 0.0 for r in rows)
    if any("writing_rm" in o for o in overrides):
        assert all("reward/writing_rm" in r for r in rows)
