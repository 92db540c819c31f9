"""The TCP ports of a run: one block per job, a port per role, and a bind that waits out a busy port.

A job's rendezvous needs `JOB_PORTS` ports on its first node: the actor's world (the block's first port),
the world of engines on GPUs of their own (+1) and the bridge between them (+2). SLURM jobs take the
block of their job id in [SLURM_PORT_BASE, SLURM_PORT_BASE + SLURM_PORT_SPAN), below Linux's ephemeral
range (32768+), so jobs whose ids are near each other never share a port on a node (ids 5000 apart share
a block; `bind_retrying` then waits for the port instead of failing the job at once). Local runs take a
block whose ports are all free now.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

JOB_PORTS = 3
ACTOR_PORT, ENGINE_PORT, BRIDGE_PORT = range(JOB_PORTS)  # offsets in the job's block
SLURM_PORT_BASE = 15000
SLURM_PORT_SPAN = 15000
BIND_ATTEMPTS = 10
BIND_WAIT_S = 3.0


def slurm_job_port(job_id: int) -> int:
    """The first port of a SLURM job's block."""
    return SLURM_PORT_BASE + (job_id % (SLURM_PORT_SPAN // JOB_PORTS)) * JOB_PORTS


def free_port_block(size: int = JOB_PORTS, host: str = "127.0.0.1") -> int:
    """The first of `size` consecutive ports that nobody listens on right now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first = probe.getsockname()[1]
        if first + size <= 65536 and all(_bindable(host, first + i) for i in range(1, size)):
            return first
    raise OSError(f"no {size} consecutive free ports on {host}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def bind_retrying(listen: Callable[[], T], what: str, attempts: int = BIND_ATTEMPTS,
                  wait_s: float = BIND_WAIT_S) -> T:
    """Call `listen` (which opens a server socket, e.g. a TCPStore on rank 0) again while its port is in use."""
    for attempt in range(1, attempts + 1):
        try:
            return listen()
        except RuntimeError as error:  # torch's DistNetworkError is a RuntimeError
            if "EADDRINUSE" not in str(error) and "address already in use" not in str(error).lower():
                raise
            if attempt == attempts:
                raise RuntimeError(f"{what}: the port stayed in use over {attempts} tries ({error})") from None
            log.warning("%s: port in use, trying again in %.0f s (%d/%d)", what, wait_s, attempt, attempts)
            time.sleep(wait_s)
    raise AssertionError("unreachable")
