"""`lwz` as the user runs it: a subprocess in the repository root with OMP_NUM_THREADS=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lwz(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `python -m lwz.cli ARGS`; its exit code, stdout and stderr (text)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lwz.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
