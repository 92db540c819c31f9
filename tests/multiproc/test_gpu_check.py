"""The GPU check's CPU twin: `bench/gpu_check.py --device cpu` runs every check on the tiny shape (attention,
the actor's memory counted against the plan, the loop's phase order with the engine stand-in, resume), so the
script a lent GPU runs cannot rot while none is lent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_check_passes_on_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    table = (tmp_path / "gpu_check.md").read_text() if (tmp_path / "gpu_check.md").exists() else ""
    print("\n" + table)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == [
        "attention (SdpaAttention)", "actor memory vs the plan", "phase order, 2 steps (engine stand-in)",
        "resume from a checkpoint"]
    assert all(" | pass | " in row for row in rows), rows
