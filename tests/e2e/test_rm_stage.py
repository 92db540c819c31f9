"""Reward-model runs from a recipe (`stage: reward_model`): the plan at the paper's scale, errors before
the queue, and a resumed `lwz train-rm` run. (The tiny recipe's accuracy and the loop on the RM it trained:
tests/e2e/test_pipeline.py.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import lwz

from lwz.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY_RM = ROOT / "recipes" / "writing_rm_tiny.yaml"


def test_the_72b_reward_model_plans_on_64_gpus_with_memory_per_gpu(capsys, monkeypatch):
    monkeypatch.delenv("LWZ_MODELS", raising=False)
    assert main(["plan", str(ROOT / "recipes" / "writing_rm_72b.yaml")]) == 0
    out = capsys.readouterr().out
    print(out)
    ranks = [line for line in out.splitlines() if line.strip() and line.split()[0].isdigit() and "|" in line]
    assert len(ranks) == 64 and all(" actor |" in line for line in ranks)
    assert "tp 8 x cp 1 x dp 2 x pp 4 = 64 ranks" in out and "72.71B params" in out
    assert "scalar head" in out and "Bradley-Terry" in out and "engine " not in out
    peak = float(re.search(r"peak per actor GPU by phase: .*\bupdate ([\d.]+)", out).group(1))
    assert 10 < peak < 80


@pytest.mark.parametrize("overrides, key, fragment", [
    (["rollout.tp=2"], "rollout.tp", "not used by stage reward_model"),
    (["rewards.terms=[{name: length}]"], "rewards.terms", "not used by stage reward_model"),
    (["schedule.prompts_per_step=8"], "schedule.prompts_per_step", "not used by stage reward_model"),
    (["logging.samples_per_step=2"], "logging.samples_per_step", "not used by stage reward_model"),
    (["rm.pairs=[]"], "rm.pairs", "no preference pairs"),
    (["actor.micro_batch_tokens=300"], "actor.micro_batch_tokens", "cannot hold one pair"),
    (["cluster.gpus_per_node=2", "rm.pairs_per_step=1"], "rm.pairs_per_step", "cannot feed 2"),
])
def test_settings_the_stage_does_not_run_are_rejected(overrides, key, fragment, capsys):
    assert main(["plan", str(TINY_RM), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and fragment in err, err


def test_rm_settings_in_an_rl_recipe_and_the_wrong_command_are_errors(capsys):
    assert main(["plan", str(ROOT / "recipes" / "tiny.yaml"), "rm.pairs_per_step=8"]) == 2
    assert "rm: is read by stage reward_model only" in capsys.readouterr().err
    assert main(["train-rm", str(ROOT / "recipes" / "tiny.yaml"), "--dry-run"]) == 2
    assert "lwz train-rm runs stage reward_model recipes (use lwz run)" in capsys.readouterr().err


def test_a_malformed_pairs_file_is_one_line_before_the_queue(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    good = {"prompt": "Write.", "chosen": "A good answer.", "rejected": "bad"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "chosen": ""}) + "\n")
    proc = lwz("train-rm", TINY_RM, f"rm.pairs=[{bad}]", f"logging.output_dir={tmp_path / 'runs'}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"lwz: error: {bad}:2: chosen: 'chosen' must be a non-empty "
                                                "string (set rm.chosen_field)"]
    assert not (tmp_path / "runs").exists()  # nothing half-written


@pytest.mark.slow
def test_a_resumed_reward_model_run_takes_the_steps_of_an_uninterrupted_one(tmp_path):
    """Four steps with a checkpoint after two; then the run folder loses step 4 (as a job killed after its
    step-2 checkpoint would) and resumes: steps 3-4 and the exported model are the same."""
    short = ["schedule.steps=4", "schedule.save_every=2", "schedule.eval_every=0", "rm.pairs_per_step=8",
             "logging.wandb.mode=disabled", f"logging.output_dir={tmp_path}", "logging.run=rm"]
    proc = lwz("train-rm", TINY_RM, *short)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = tmp_path / "writing_rm_tiny" / "rm"
    first = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scores = json.loads((run / "reward_model" / "metrics.json").read_text())
    for path in (run / "ckpt" / "step-00000004", run / "reward_model"):
        shutil.rmtree(path)
    (run / "ckpt" / "latest").write_text("step-00000002\n")
    proc = lwz("train-rm", run)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "resumed from" in proc.stderr and "at step 2" in proc.stderr
    again = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [0, 1, 2, 3, 4]
    for key in ("loss", "grad_norm", "accuracy"):
        assert [r[key] for r in again[3:]] == pytest.approx([r[key] for r in first[3:]], rel=1e-6), key
    assert json.loads((run / "reward_model" / "metrics.json").read_text()) == pytest.approx(scores, rel=1e-6)
