"""Start `actor_worker.py` (or another worker script) as N real processes with `torch.distributed.run` and read rank 0's result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("actor_worker.py")
REPO = WORKER.parents[2]


def run_distributed(nproc: int, out: Path, *argv: str | Path, timeout: float = 240) -> dict:
    """Run the script command line `argv` over `nproc` gloo processes; returns what rank 0 saved to `out`."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), LWZ_DEVICE="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, argv)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"{argv[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return torch.load(out, weights_only=False)


def run_worker(scenario: str, nproc: int, out: Path, *args: str, timeout: float = 240) -> dict:
    """Run one scenario of `actor_worker.py` over `nproc` gloo processes; returns what rank 0 saved to `out`."""
    return run_distributed(nproc, out, WORKER, scenario, out, *args, timeout=timeout)
