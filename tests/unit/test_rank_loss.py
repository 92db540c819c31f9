"""A collective that failed because a rank is gone becomes one line naming the rank, host and resume point."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from lwz.runtime.rank_loss import rank_loss

GLOO_CLOSED = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
               "[10.77.0.12]:32933. This is typically caused by a remote worker crashing. Check the logs of the "
               "remote worker before reporting an error. GLHF!")


def test_a_closed_peer_names_the_rank_host_and_checkpoint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLURMD_NODENAME", "lwzn1")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "latest").write_text("step-00000003\n")
    error = rank_loss(RuntimeError(GLOO_CLOSED), tmp_path, rank=0)
    assert str(error) == (f"{tmp_path}: rank 0 on lwzn1: another rank of the job is gone (Connection closed by peer "
                          f"[10.77.0.12]:32933); the job stops here. `lwz run {tmp_path}` resumes it from its last "
                          "checkpoint (step-00000003)")


def test_a_timeout_and_torchs_own_errors_count_and_others_do_not(tmp_path: Path) -> None:
    timed_out = rank_loss(RuntimeError("[pair.cc:598] Timed out waiting 30000ms for recv operation"), tmp_path, 1)
    assert "(Timed out waiting 30000ms for recv operation)" in str(timed_out) and "from the start" in str(timed_out)
    assert rank_loss(dist.DistBackendError("NCCL communicator was aborted"), tmp_path, 0) is not None
    assert rank_loss(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), tmp_path, 0) is None
    assert rank_loss(ValueError("Timed out"), tmp_path, 0) is None
