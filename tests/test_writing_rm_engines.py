"""The writing RM served by vLLM pooling engines in the loop's SPMD layout, over real gloo processes.

`dist_rm/rm_worker.py` scores 16 fixed responses of `recipes/tiny.yaml`'s reward mix at 1 rank, at
2 ranks with one RM engine per rank (each scores half), and at 2 ranks with one RM engine of tp 2 next
to per-rank rollout engines of tp 1 (each engine on its own vLLM groups). The rewards are the same in
all three layouts, and the rollout engine generates the same before and after the RM engine exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("dist_rm") / "rm_worker.py"
REPO = WORKER.parents[2]


def run_worker(folder: Path, world: int, rm_tp: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), LWZ_DEVICE="cpu")
    out = folder / f"w{world}-tp{rm_tp}.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", str(WORKER),
           str(out), "--rm-tp", str(rm_tp)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("rm-engines")
    return {"1 rank": run_worker(folder, 1, 1), "2 engines": run_worker(folder, 2, 1),
            "1 engine tp2": run_worker(folder, 2, 2)}


def test_each_engine_scores_its_share(layouts):
    assert layouts["1 rank"]["scored"] == [16]
    assert layouts["2 engines"]["engines"] == [[0], [1]] and layouts["2 engines"]["scored"] == [8, 8]
    assert layouts["1 engine tp2"]["engines"] == [[0, 1]] and layouts["1 engine tp2"]["scored"] == [16, 16]


def test_rewards_are_the_same_in_every_layout(layouts):
    reference = layouts["1 rank"]["scores"]
    assert set(reference) == {"length", "format", "writing_rm"} and len(set(reference["writing_rm"])) > 4
    for name, result in layouts.items():
        for term, values in result["scores"].items():
            assert values == pytest.approx(reference[term], abs=1e-5), (name, term)


def test_rollout_engine_is_untouched_by_the_reward_engine(layouts):
    for name, result in layouts.items():
        before, after = result["greedy"]
        assert before == after and len(before) == 8, name
