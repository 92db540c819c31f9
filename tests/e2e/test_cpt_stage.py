"""Continual-pretraining runs from a recipe (`stage: pretrain`): the paper's stage planned on 64 GPUs,
errors before the queue, and `lwz pretrain recipes/cpt_tiny.yaml` killed and resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import lwz

from lwz.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "cpt_tiny.yaml"


def test_the_papers_stage_plans_on_64_gpus_with_memory_for_32k_rows(capsys, monkeypatch):
    monkeypatch.delenv("LWZ_MODELS", raising=False)
    assert main(["plan", str(ROOT / "recipes" / "cpt_qwen25_32b.yaml")]) == 0
    out = capsys.readouterr().out
    print(out)
    ranks = [line for line in out.splitlines() if line.strip() and line.split()[0].isdigit() and "|" in line]
    assert len(ranks) == 64 and "tp 8 x cp 1 x dp 4 x pp 2 = 64 ranks" in out
    assert "rows of 32768 tokens" in out and "4194304 tokens = 128 rows/step" in out
    peak = float(re.search(r"peak per actor GPU by phase: .*\bupdate ([\d.]+)", out).group(1))
    assert 10 < peak < 80


@pytest.mark.parametrize("overrides, key, fragment", [
    (["cpt.tokens_per_step=1000"], "cpt.tokens_per_step", "not a multiple of cpt.seq_length"),
    (["actor.micro_batch_tokens=64"], "actor.micro_batch_tokens", "holds no row"),
    (["cpt.sources=[]"], "cpt.sources", "no sources given"),
    (["rm.pairs_per_step=8"], "rm", "is read by stage reward_model only"),
    (["rollout.max_tokens=8"], "rollout.max_tokens", "not used by stage pretrain"),
])
def test_settings_the_stage_does_not_run_are_rejected(overrides, key, fragment, capsys):
    assert main(["plan", str(TINY), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and fragment in err, err
    assert main(["plan", str(ROOT / "recipes" / "tiny.yaml"), "cpt.seq_length=64"]) == 2
    assert "cpt: is read by stage pretrain only" in capsys.readouterr().err


def test_bad_sources_are_one_line_before_the_queue(tmp_path):
    (tmp_path / "docs.jsonl").write_text(json.dumps({"body": "no text field"}) + "\n")
    for source, expected in ((tmp_path / "missing.jsonl", "missing.jsonl: cpt.sources.0.path: not found"),
                             (tmp_path / "docs.jsonl", "docs.jsonl:1: text: 'text' must be a string")):
        proc = lwz("pretrain", TINY, f"cpt.sources=[{{path: '{source}'}}]", f"logging.output_dir={tmp_path / 'runs'}",
                   timeout=120)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert expected in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes_at_the_same_data_position(tmp_path):
    """Six steps of two rows with a checkpoint every two, once straight and once SIGKILLed after its first
    checkpoint and resumed (`lwz pretrain RUN`): the resumed steps train on the same rows, so losses and
    held-out losses match the straight run's. (The held-out loss falling and the handoff to RL:
    tests/e2e/test_pipeline.py.)"""
    shared = ["schedule.steps=6", "schedule.save_every=2", "schedule.eval_every=3", "cpt.tokens_per_step=256",
              "cpt.eval_rows=2", f"cpt.cache={tmp_path / 'tokens'}", f"logging.output_dir={tmp_path / 'runs'}",
              "logging.wandb.mode=disabled"]
    straight = lwz("pretrain", TINY, *shared, "logging.run=straight")
    assert straight.returncode == 0, (straight.stdout + straight.stderr)[-3000:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "lwz.cli", "pretrain", str(TINY), *shared, "logging.run=killed"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run = tmp_path / "runs" / "cpt_tiny" / "killed"
    deadline = time.time() + 300
    while not (run / "ckpt" / "latest").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model").exists()
    resumed = lwz("pretrain", run)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "resumed from" in resumed.stderr

    def rows(name: str) -> dict[int, dict]:
        lines = (tmp_path / "runs" / "cpt_tiny" / name / "metrics.jsonl").read_text().splitlines()
        return {row["step"]: row for row in map(json.loads, lines)}  # a resumed step's last line counts

    want, got = rows("straight"), rows("killed")
    assert sorted(got) == sorted(want) == list(range(7))
    for step in range(1, 7):
        for key in ("loss", "grad_norm", "eval/loss"):
            if key in want[step]:
                assert got[step][key] == pytest.approx(want[step][key], rel=1e-6), (step, key)
    stamp = json.loads((run / "model" / "lwz_pretrain.json").read_text())
    assert stamp["eval/loss"] == pytest.approx(want[6]["eval/loss"], rel=1e-6)
