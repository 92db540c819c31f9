"""Submit a run to SLURM with submitit: one task per GPU (CPU recipes: per worker process).

The sbatch options come from the recipe's `cluster` section (`slurm_parameters`); `render_sbatch`
gives the exact script `submit` would send, without sending it. Each task runs
`SlurmRunWorker(run_dir)` (lwz.launch.requeue), which sets torch's variables from SLURM's and
calls `lwz.launch.worker.run_worker`. RUN/slurm/job.json records the job for `lwz status/logs/cancel`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import submitit

from lwz import atomic
from lwz.errors import LwzError
from lwz.launch.requeue import SlurmRunWorker
from lwz.plan.resolve import Plan
from lwz.recipe.schema import Recipe

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
CONTAINER_PYTHON = "python3"  # the interpreter inside a container image


def time_to_minutes(value: str) -> int:
    """SLURM's 'MM', 'HH:MM:SS' or 'D-HH:MM:SS' as whole minutes (seconds round up)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})|(\d+)", value.strip())
    if not match:
        raise LwzError(None, "cluster.time", f"{value!r} is not a time limit (allowed: HH:MM:SS, D-HH:MM:SS, minutes)")
    if match.group(5):
        return int(match.group(5))
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups()[:4])
    if minutes > 59 or seconds > 59:
        raise LwzError(None, "cluster.time", f"{value!r}: minutes and seconds must be below 60")
    return days * 24 * 60 + hours * 60 + minutes + (1 if seconds else 0)


def slurm_parameters(recipe: Recipe, plan: Plan, job_name: str) -> dict[str, Any]:
    """The recipe's sbatch options, named as submitit's SlurmExecutor takes them."""
    cluster = recipe.cluster
    params: dict[str, Any] = {
        "job_name": job_name,
        "nodes": plan.nodes,
        "ntasks_per_node": plan.gpus_per_node,
        "cpus_per_task": cluster.cpus_per_task,
        "time": time_to_minutes(cluster.time),
        "stderr_to_stdout": True,
        "additional_parameters": {"requeue": True, **cluster.sbatch},
    }
    if cluster.setup:
        params["setup"] = list(cluster.setup)
    if plan.device == "gpu":
        params["gres"] = f"gpu:{plan.gpus_per_node}"
    optional = {"mem": f"{cluster.mem_gb}GB" if cluster.mem_gb else None, "partition": cluster.partition,
                "account": cluster.account, "qos": cluster.qos, "constraint": cluster.constraint}
    params.update({key: value for key, value in optional.items() if value is not None})
    if cluster.container:
        output_dir = Path(recipe.logging.output_dir).resolve()
        params["srun_args"] = [f"--container-image={cluster.container}",
                               f"--container-mounts={output_dir}:{output_dir}"]
    return params


def make_executor(submitit_folder: Path, params: dict[str, Any], max_requeues: int,
                  container: str | None) -> submitit.AutoExecutor:
    """A SLURM AutoExecutor writing into `submitit_folder` with `params` (see slurm_parameters)."""
    python = {"slurm_python": CONTAINER_PYTHON} if container else {}
    try:
        executor = submitit.AutoExecutor(folder=submitit_folder, cluster="slurm",
                                         slurm_max_num_timeout=max_requeues, **python)
    except RuntimeError as e:
        raise LwzError(None, "cluster.launcher", f"SLURM is not available here ({e})") from None
    executor.update_parameters(**{f"slurm_{key}": value for key, value in params.items()})
    return executor


def job_name(recipe: Recipe, folder: Path) -> str:
    """'<recipe name>/<run>'."""
    return f"{recipe.name}/{Path(folder).name}"


def render_sbatch(recipe: Recipe, plan: Plan, folder: Path) -> str:
    """The sbatch script `submit` would send for the run in `folder` (nothing is submitted)."""
    folder = Path(folder).resolve()
    executor = make_executor(folder / "slurm", slurm_parameters(recipe, plan, job_name(recipe, folder)),
                             recipe.cluster.max_requeues, recipe.cluster.container)
    inner = executor._executor  # submitit writes exactly this text before calling sbatch
    return inner._make_submission_file_text(inner._submitit_command_str, uid="")


def submit_job(recipe: Recipe, plan: Plan, folder: Path, after: Sequence[str] = ()) -> str:
    """Submit the run in `folder` as one SLURM job (held until the jobs `after` complete well); its id."""
    folder = Path(folder).resolve()
    params = slurm_parameters(recipe, plan, job_name(recipe, folder))
    if after:
        params["additional_parameters"]["dependency"] = "afterok:" + ":".join(after)
    executor = make_executor(folder / "slurm", params, recipe.cluster.max_requeues, recipe.cluster.container)
    job = executor.submit(SlurmRunWorker(folder, recipe.cluster.max_requeues))
    write_job_record(folder, job.job_id, folder / "slurm", plan.world_size)
    return str(job.job_id)


def submit(recipe: Recipe, plan: Plan, folder: Path, tell: Callable[[str], None] = log.info) -> int:
    """Submit the run in `folder` as one SLURM job; tells the job id, the run folder and how to follow it."""
    folder = Path(folder).resolve()
    job_id = submit_job(recipe, plan, folder)
    tell(f"submitted job {job_id} ({job_name(recipe, folder)}, {plan.nodes} node(s) x {plan.gpus_per_node} tasks)")
    tell(f"run folder: {folder}")
    tell(f"follow it: lwz status {folder}  |  lwz logs {folder} -f  |  lwz cancel {folder}")
    return 0


def write_job_record(folder: Path, job_id: str, submitit_folder: Path, tasks: int) -> None:
    """Atomically write RUN/slurm/job.json: job id, submission time, where submitit keeps its files."""
    record = {"job_id": str(job_id), "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "submitit_folder": str(submitit_folder), "tasks": tasks}
    atomic.write_text(folder / "slurm" / JOB_FILE, json.dumps(record, indent=1) + "\n")
    log.debug("job %s recorded in %s", job_id, folder / "slurm" / JOB_FILE)


def read_job_record(folder: Path) -> dict[str, Any]:
    """RUN/slurm/job.json, or an LwzError when the run was never submitted to SLURM."""
    path = Path(folder) / "slurm" / JOB_FILE
    if not path.is_file():
        raise LwzError(str(folder), None, f"no SLURM job recorded ({path} is missing); local runs log to "
                       f"the console and {Path(folder) / 'logs'}")
    return json.loads(path.read_text())

