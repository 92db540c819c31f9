"""The writing RM served in the loop's SPMD layout, over real gloo processes: megatron-core on the actor's
grid, in host memory outside the reward phase.

`dist_rm/rm_worker.py` scores the answers of held-out pairs with `recipes/tiny.yaml`'s reward mix at 1 rank,
at 2 data-parallel ranks (each scores half) and at TP 2. The scores equal transformers' sequence classifier
of the same folder (1e-4) in every layout and micro-batching, the RM ranks the held-out pairs, and the
rollout engine generates the same before and after the reward phase in the same process.
"""

from __future__ import annotations

import pytest
import torch
from dist_actor.launch import REPO, run_distributed

pytestmark = pytest.mark.slow
WORKER = REPO / "tests" / "dist_rm" / "rm_worker.py"
LAYOUTS = {"1 rank": (1, []), "dp2": (2, []), "tp2": (2, ["--tp", "2"])}


@pytest.fixture(scope="module")
def layouts(module_folder) -> dict[str, dict]:
    from lwz.rm.train import tiny_writing_rm_path

    tiny_writing_rm_path()  # built once here, not raced by the workers
    folder = module_folder("rm-serving")
    return {name: run_distributed(nproc, folder / f"{i}.pt", WORKER, folder / f"{i}.pt", *args, timeout=600)
            for i, (name, (nproc, args)) in enumerate(LAYOUTS.items())}


def transformers_scores(prompts: list[str], answers: list[str]) -> list[float]:
    from lwz.rm.model import encode, forward_scores, load_backbone
    from lwz.rm.train import tiny_writing_rm_path

    model, tokenizer = load_backbone(tiny_writing_rm_path())
    with torch.no_grad():
        return forward_scores(model.eval(), [encode(tokenizer, p, a, 256) for p, a in zip(prompts, answers)],
                              tokenizer.pad_token_id).tolist()


def test_scores_equal_transformers_in_every_layout(layouts):
    reference = layouts["1 rank"]
    hf = transformers_scores(reference["prompts"], reference["answers"])
    print(f"\nHF       {[round(s, 5) for s in hf[:6]]}\nmegatron {[round(s, 5) for s in reference['scores']['writing_rm'][:6]]}")
    assert layouts["dp2"]["dp"] == 2 and layouts["tp2"]["tp"] == 2
    for name, result in layouts.items():
        assert result["scores"]["writing_rm"] == pytest.approx(hf, abs=1e-4), name
        assert result["one_by_one"] == pytest.approx(hf, abs=1e-4), name
        for term, values in result["scores"].items():
            assert values == pytest.approx(reference["scores"][term], abs=1e-5), (name, term)
    assert set(reference["scores"]) == {"length", "format", "writing_rm"}


def test_the_reward_model_ranks_held_out_pairs(layouts):
    scores = layouts["1 rank"]["scores"]["writing_rm"]
    chosen, rejected = scores[:12], scores[12:24]
    assert sum(c > r for c, r in zip(chosen, rejected)) >= 11


def test_rollout_engine_is_untouched_by_the_reward_phase(layouts):
    for name, result in layouts.items():
        before, after = result["greedy"]
        assert before == after and len(before) == 8, name
