"""Continual-pretraining runs from a recipe (`stage: pretrain`): the paper's stage planned on 64 GPUs,
errors before the queue, and `lwz pretrain recipes/cpt_tiny.yaml` end to end, then two RL steps of
`recipes/tiny.yaml` on the model it wrote (the handoff)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lwz.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "cpt_tiny.yaml"


def lwz(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lwz.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_the_papers_stage_plans_on_64_gpus_with_memory_for_32k_rows(capsys, monkeypatch):
    monkeypatch.delenv("LWZ_MODELS", raising=False)
    assert main(["plan", str(ROOT / "recipes" / "cpt_qwen25_32b.yaml")]) == 0
    out = capsys.readouterr().out
    print(out)
    ranks = [line for line in out.splitlines() if line.strip() and line.split()[0].isdigit() and "|" in line]
    assert len(ranks) == 64 and "tp 8 x cp 1 x dp 4 x pp 2 = 64 ranks" in out
    assert "rows of 32768 tokens" in out and "4194304 tokens = 128 rows/step" in out
    peak = float(out.split("peak per actor GPU by phase: update ")[1].split()[0])
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
def test_tiny_recipe_lowers_the_held_out_loss_and_the_rl_recipe_trains_its_model(tmp_path):
    runs = tmp_path / "runs"
    proc = lwz("pretrain", TINY, "schedule.steps=12", "schedule.eval_every=6", "schedule.save_every=0",
               f"cpt.cache={tmp_path / 'tokens'}", f"logging.output_dir={runs}", "logging.run=cpt",
               "logging.wandb.mode=disabled")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = runs / "cpt_tiny" / "cpt"
    held = [json.loads(line)["eval/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "eval/loss" in json.loads(line)]
    print(f"\nheld-out loss at steps 0, 6, 12: {held}")
    assert len(held) == 3 and held[0] > held[1] > held[2]
    model = run / "model"
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()

    loop = lwz("run", ROOT / "recipes" / "tiny.yaml", f"model.path={model}", "schedule.steps=2", "schedule.save_every=0",
               "rollout.max_tokens=32", "rewards.terms=[{name: length}, {name: format}]", "logging.wandb.mode=disabled",
               f"logging.output_dir={runs}", "logging.run=rl")
    assert loop.returncode == 0, (loop.stdout + loop.stderr)[-3000:]
    steps = [json.loads(line) for line in (runs / "tiny" / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    assert (runs / "tiny" / "rl" / "recipe.yaml").read_text().count(str(model)) == 1
