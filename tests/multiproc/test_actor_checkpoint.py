"""Actor checkpoints: resume at another TP or DP with the same next losses; export to HF; crash safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_actor.launch import REPO, run_worker

from lwz.actor.checkpoint import LATEST, checkpoint_folder, latest_checkpoint

SAVE_AT, UPDATES = 2, 4  # two updates after the resume: the second one shows the Adam states


def _save(root: Path, name: str, nproc: int, tp: int) -> tuple[Path, dict]:
    run = root / name
    result = run_worker("save", nproc, root / f"{name}.pt", "--tp", str(tp), "--updates", str(UPDATES),
                        "--save-at", str(SAVE_AT), "--folder", str(run))  # fmt: skip
    return run, result


def _assert_resume_continues(run: Path, uninterrupted: dict, nproc: int, tp: int, out: Path) -> None:
    resumed = run_worker("resume", nproc, out, "--tp", str(tp), "--updates", str(UPDATES),
                         "--save-at", str(SAVE_AT), "--folder", str(run))  # fmt: skip
    assert resumed["extra_step"] == SAVE_AT
    assert len(resumed["metrics"]) == UPDATES - SAVE_AT
    for expected, got in zip(uninterrupted["metrics"][SAVE_AT:], resumed["metrics"]):
        for key in ("loss", "grad_norm", "approx_kl_old", "clip_fraction"):
            # a grad norm (~3-5 here) sums squares in another order per layout: its noise scales with it
            assert got[key] == pytest.approx(expected[key], abs=1e-5, rel=1e-5 if key == "grad_norm" else None), key
    assert uninterrupted["metrics"][SAVE_AT]["approx_kl_old"] > 0  # the restored weights matter


@pytest.fixture(scope="module")
def saved_run(module_folder, tiny_qwen2) -> tuple[Path, dict]:
    """Four updates at TP=2 with a checkpoint after the second; returns the run folder and results."""
    return _save(module_folder("ckpt"), "run", 2, tp=2)


@pytest.mark.slow
@pytest.mark.parametrize("nproc,tp", [(1, 1), (2, 1)], ids=["tp1", "dp2"])
def test_resume_continues_the_tp2_run(saved_run, tmp_path, nproc, tp):
    run, uninterrupted = saved_run
    folder = checkpoint_folder(run / "ckpt", SAVE_AT)
    assert latest_checkpoint(run / "ckpt") == folder
    assert (run / "ckpt" / LATEST).read_text().strip() == folder.name
    assert not [p for p in (run / "ckpt").iterdir() if ".tmp-" in p.name]
    _assert_resume_continues(run, uninterrupted, nproc, tp, tmp_path / "resume.pt")


@pytest.mark.slow
def test_resume_of_a_dp2_run_at_dp2_and_dp1(tmp_path, tiny_qwen2):
    """The distributed optimizer's shards (Adam moments and step) come back at the same DP and at another."""
    run, uninterrupted = _save(tmp_path, "dp2", 2, tp=1)
    _assert_resume_continues(run, uninterrupted, 2, 1, tmp_path / "dp2.pt")
    _assert_resume_continues(run, uninterrupted, 1, 1, tmp_path / "dp1.pt")


@pytest.mark.slow
def test_export_matches_megatron_logits_and_loads_in_transformers(saved_run):
    run, result = saved_run
    out = run.parent / "export" / "hf"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests' / 'dist_actor'}")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "dist_actor" / "export_check.py"), str(run),
                           str(SAVE_AT), str(out)], env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "Warning" not in proc.stderr   # megatron's (no Apex, deprecations) go to the run's libraries log
    assert "Apex" in (run / "logs" / "libraries.rank0.log").read_text()
    check = torch.load(out.parent / "check.pt", weights_only=False)
    assert (check["logits"] - result["logits"]).abs().max().item() < 1e-4
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    assert "<|im_start|>" in check["decoded"]


def _fake_checkpoint(folder: Path, complete: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text("{}")
    if complete:
        (folder / "extra.json").write_text("{}")
    return folder


def test_latest_checkpoint_skips_what_a_crash_leaves(tmp_path):
    root = tmp_path / "ckpt"
    assert latest_checkpoint(root) is None
    older = _fake_checkpoint(checkpoint_folder(root, 5))
    (root / LATEST).write_text(older.name + "\n")
    # a crash mid-save leaves a temporary folder (and `latest` still naming the previous one)
    _fake_checkpoint(root / (checkpoint_folder(root, 10).name + ".tmp-abc123"), complete=False)
    assert latest_checkpoint(root) == older
    # a pointer to a missing or half-written folder falls back to the newest complete one
    newer = _fake_checkpoint(checkpoint_folder(root, 7))
    _fake_checkpoint(checkpoint_folder(root, 9), complete=False)
    (root / LATEST).write_text(checkpoint_folder(root, 9).name)
    assert latest_checkpoint(root) == newer


def test_a_load_into_another_optimizer_class_is_refused(saved_run, tmp_path):
    """The checkpoint records its optimizer classes; an optimizer of another class (a stand-in for TE's FusedAdam,
    which lwz never builds: megatron-core is given torch's Adam on every machine) refuses to load it."""
    run, _ = saved_run
    classes = json.loads((latest_checkpoint(run / "ckpt") / "optimizer.json").read_text())["classes"]
    assert classes == ["DistributedOptimizer(torch.optim.adamw.AdamW)"]
    result = run_worker("stand_in", 1, tmp_path / "stand_in.pt", "--folder", str(run))
    print(f"\n{result['error']}")
    assert result["classes"] == ["DistributedOptimizer(__main__.StandInAdam)"]
    assert "saved by DistributedOptimizer(torch.optim.adamw.AdamW); this run builds" in result["error"]
    assert "StandInAdam" in result["error"] and "\n" not in result["error"]
