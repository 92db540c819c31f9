"""A run's ports: a free block of three locally, and a rendezvous that waits out a port in use."""

from __future__ import annotations

import datetime
import socket
import threading
import time

import pytest
import torch.distributed as dist

from lwz.launch.ports import JOB_PORTS, bind_retrying, free_port_block


def test_a_free_block_has_every_port_free() -> None:
    first = free_port_block()
    for port in range(first, first + JOB_PORTS):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_a_store_waits_for_its_port_to_be_released() -> None:
    """A TCPStore on a port still held binds once the holder lets go (the bind is tried again)."""
    port = free_port_block(1)
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    threading.Timer(0.5, holder.close).start()
    start = time.monotonic()
    store = bind_retrying(lambda: dist.TCPStore("127.0.0.1", port, 1, True,
                                                timeout=datetime.timedelta(seconds=5)),
                          "test store", attempts=5, wait_s=0.3)
    store.set("k", "v")
    assert store.get("k") == b"v" and time.monotonic() - start < 3


def test_a_port_that_stays_busy_fails_with_the_role_named() -> None:
    port = free_port_block(1)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(RuntimeError, match=f"the bridge's store on 127.0.0.1:{port}: the port stayed in use"):
            bind_retrying(lambda: dist.TCPStore("127.0.0.1", port, 1, True, timeout=datetime.timedelta(seconds=5)),
                          f"the bridge's store on 127.0.0.1:{port}", attempts=2, wait_s=0.1)


def test_other_failures_are_not_retried() -> None:
    calls = []

    def fail() -> None:
        calls.append(1)
        raise RuntimeError("connection refused")

    with pytest.raises(RuntimeError, match="connection refused"):
        bind_retrying(fail, "x", attempts=3, wait_s=0)
    assert calls == [1]
