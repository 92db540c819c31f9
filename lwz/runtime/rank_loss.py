"""A collective that failed because another rank of the job is gone, told as one line.

gloo says "Connection closed by peer" when a rank's process died and "Timed out" when its machine went
silent (after `cluster.collective_timeout_s`); NCCL raises torch's DistError. Either way the job cannot
go on: this rank fails at once, naming itself, its host and where the run resumes from.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import torch.distributed as dist

from lwz.errors import LwzError

PEER_GONE = re.compile(r"Connection (closed|reset) by peer|Timed out|timed out|Broken pipe|Connection refused")


def rank_loss(error: BaseException, run_dir: Path, rank: int) -> LwzError | None:
    """An LwzError saying the job lost a rank, when `error` is such a failure; None otherwise."""
    if not (isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and PEER_GONE.search(str(error)))):
        return None
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    cause = re.sub(r"^\[[^\]]*\] ", "", cause).split(". ")[0][:200]  # gloo: "[file:line] What. Advice..."
    latest = run_dir / "ckpt" / "latest"
    since = f"its last checkpoint ({latest.read_text().strip()})" if latest.is_file() else "the start"
    host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    return LwzError(str(run_dir), None, f"rank {rank} on {host}: another rank of the job is gone "
                    f"({cause}); the job stops here. `lwz run {run_dir}` resumes it from {since}")
