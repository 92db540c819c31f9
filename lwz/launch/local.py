"""Start a run's ranks on this machine (torchrun-like) and stream rank 0's progress."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lwz.launch.ports import free_port_block
from lwz.runtime.lifetime import die_with_parent

log = logging.getLogger(__name__)


def launch_local(run_dir: Path, world_size: int) -> int:
    """Run `python -m lwz.launch.worker RUN_DIR` as `world_size` ranks; returns the first failing exit code."""
    port = free_port_block()
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    files = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
        out = None
        if rank > 0:
            out = open(logs / f"rank{rank}.log", "ab")
            files.append(out)
        procs.append(subprocess.Popen([sys.executable, "-m", "lwz.launch.worker", str(run_dir)], env=env,
                                      stdout=out, stderr=subprocess.STDOUT if out else None,
                                      start_new_session=True, preexec_fn=die_with_parent))
    try:
        return _wait(procs)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    finally:
        for f in files:
            f.close()


def _wait(procs: list[subprocess.Popen]) -> int:
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            _stop(procs)
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.5)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)

