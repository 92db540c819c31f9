"""Start `actor_worker.py` (or another worker script) as N real processes with `torch.distributed.run` and read rank 0's result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from lwz.launch.ports import free_port_block

WORKER = Path(__file__).with_name("actor_worker.py")
REPO = WORKER.parents[2]
PORT_TAKEN = ("eaddrinuse", "address already in use")


def torchrun(nproc: int, *argv: str | Path) -> list[str]:
    """torchrun's command line for `nproc` processes on this machine, on a block of free ports (the job's
    world, the engine world and the bridge take the first three, as in a run)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={free_port_block()}", *map(str, argv)]


def run_torchrun(nproc: int, *argv: str | Path, env: dict[str, str], timeout: float, attempts: int = 3
                 ) -> subprocess.CompletedProcess:
    """`torchrun(nproc, *argv)` to its end; started again on a new port block when another process took the
    port between its pick and torchrun's bind (the tests run two at a time)."""
    for _ in range(attempts):
        proc = subprocess.run(torchrun(nproc, *argv), env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO)
        output = (proc.stdout + proc.stderr).lower()
        if proc.returncode == 0 or not any(taken in output for taken in PORT_TAKEN):
            break
    return proc


def run_distributed(nproc: int, out: Path, *argv: str | Path, timeout: float = 240) -> dict:
    """Run the script command line `argv` over `nproc` gloo processes; returns what rank 0 saved to `out`."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), LWZ_DEVICE="cpu")
    proc = run_torchrun(nproc, *argv, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{argv[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return torch.load(out, weights_only=False)


def run_worker(scenario: str, nproc: int, out: Path, *args: str, timeout: float = 240) -> dict:
    """Run one scenario of `actor_worker.py` over `nproc` gloo processes; returns what rank 0 saved to `out`."""
    return run_distributed(nproc, out, WORKER, scenario, out, *args, timeout=timeout)
