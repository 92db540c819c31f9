"""The callable a SLURM task runs, with bounded requeues on preemption and time limits.

How a run survives SLURM (see slurm/test_cluster/README.md for what SLURM and submitit do):
- USR2, sent `signal_delay_s` before the time limit (or by `scancel --signal=USR2`): submitit calls
  `SlurmRunWorker.checkpoint()` on rank 0, which returns a fresh submission of the same run
  folder; submitit requeues the job and the restarted job resumes from the run's last checkpoint.
- SIGTERM (`scontrol requeue`, SLURM preemption with PreemptMode=REQUEUE, `scancel`): recorded
  and otherwise ignored, as submitit does; SLURM kills the job after KillWait and, when it
  requeues it, the same submission starts again and resumes from the last checkpoint.
- Every start with SLURM_RESTART_COUNT above `cluster.max_requeues` fails at once, and USR2 does
  not requeue a job that has used them up. An exception fails the job: submitit never requeues
  on errors, so a real failure stops the run.

Events (starts, signals, requeues) go to RUN/slurm/requeues.json, written atomically by rank 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import types
from pathlib import Path
from typing import Any

import submitit

from lwz import atomic
from lwz.errors import LwzError
from lwz.launch.env import dist_env_from_environ, export_torch_env

log = logging.getLogger(__name__)

REQUEUES_FILE = "requeues.json"


def restart_count() -> int:
    """How many times SLURM has restarted this job (0 on its first start)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def read_requeues(run_dir: Path) -> dict[str, Any]:
    """The run's requeue record ({"max_requeues": n, "events": [...]}), empty before any start."""
    path = Path(run_dir) / "slurm" / REQUEUES_FILE
    return json.loads(path.read_text()) if path.is_file() else {"events": []}


def record_event(run_dir: Path, max_requeues: int, event: str, **details: Any) -> None:
    """Append one event (with the job id, restart count and time) to RUN/slurm/requeues.json."""
    record = read_requeues(run_dir)
    record["max_requeues"] = max_requeues
    record["events"].append({"event": event, "job_id": _job_id(), "restart_count": restart_count(),
                             "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **details})
    atomic.write_text(Path(run_dir) / "slurm" / REQUEUES_FILE, json.dumps(record, indent=1) + "\n")


class SlurmRunWorker(submitit.helpers.Checkpointable):
    """One rank of a run inside a SLURM task: torch env from SLURM, then `run_worker(run_dir)`."""

    def __init__(self, run_dir: Path, max_requeues: int) -> None:
        self.run_dir = Path(run_dir)
        self.max_requeues = max_requeues

    def __call__(self) -> None:
        from lwz.launch.worker import configure_logging, run_worker

        configure_logging(self.run_dir)
        env = dist_env_from_environ()
        export_torch_env(env)
        os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
        restarts = restart_count()
        if env.rank == 0:
            signal.signal(signal.SIGTERM, self._on_sigterm)
            record_event(self.run_dir, self.max_requeues, "start", rank_count=env.world_size,
                         nodes=os.environ.get("SLURM_JOB_NODELIST"))
        if restarts > self.max_requeues:
            raise LwzError(str(self.run_dir), "cluster.max_requeues", f"the job was restarted {restarts} times, "
                           f"more than the {self.max_requeues} allowed; resume it with `lwz run {self.run_dir}`")
        log.info("rank %d/%d of %s on %s (restart %d)", env.rank, env.world_size, self.run_dir,
                 os.environ.get("SLURMD_NODENAME", "?"), restarts)
        run_worker(self.run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission | None:
        """On USR2 (rank 0): requeue a fresh worker of the same run folder, unless the limit is reached.

        The training state lives in the run folder's checkpoints, not in this object.
        """
        if restart_count() >= self.max_requeues:
            record_event(self.run_dir, self.max_requeues, "not_requeued", reason="cluster.max_requeues reached")
            log.warning("not requeuing %s: %d requeues used of %d", self.run_dir, restart_count(), self.max_requeues)
            return None
        record_event(self.run_dir, self.max_requeues, "requeue", signal="USR2")
        log.warning("requeuing %s; it resumes from its last checkpoint", self.run_dir)
        return submitit.helpers.DelayedSubmission(SlurmRunWorker(self.run_dir, self.max_requeues))

    def _on_sigterm(self, signum: int, frame: types.FrameType | None) -> None:
        """Preemption, `scontrol requeue` or `scancel`: record it; SLURM kills and maybe restarts the job."""
        record_event(self.run_dir, self.max_requeues, "SIGTERM")
        log.warning("SIGTERM: the job is being requeued, preempted or cancelled; a restart resumes "
                    "from the last checkpoint in %s", self.run_dir / "ckpt")


def _job_id() -> str | None:
    """This job's id as squeue shows it (ARRAY_TASK form for array elements)."""
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")
