"""`lwz sweep`, `lwz compare`, and `lwz status/logs/cancel` for runs submitted to SLURM."""

from __future__ import annotations

import argparse
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

from submitit.core.utils import JobPaths

from lwz.errors import LwzError

ACTIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING")
FOLLOW_POLL_S = 1.0


def job_state(job_id: str, submitit_folder: str | Path | None = None) -> str:
    """SLURM's state of a job: squeue, else sacct, else scontrol, else (once SLURM has forgotten the
    job) the outcome in submitit's result file of rank 0; UNKNOWN when none of them knows it."""
    queries = (["squeue", "--noheader", "--jobs", job_id, "--format", "%T"],
               ["sacct", "--noheader", "--allocations", "--parsable2", "--jobs", job_id, "--format", "State"],
               ["scontrol", "show", "job", job_id])
    for command in queries:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode != 0 or not result.stdout.strip():
            continue
        if command[0] == "scontrol":
            match = re.search(r"JobState=(\S+)", result.stdout)
            if match:
                return match.group(1)
            continue
        return result.stdout.split()[0].rstrip("+")
    result_file = JobPaths(submitit_folder, job_id=job_id, task_id=0).result_pickle if submitit_folder else None
    if result_file is not None and result_file.is_file():
        with open(result_file, "rb") as f:
            outcome = pickle.load(f)[0]  # submitit's ("success" | "error", payload)
        return "COMPLETED" if outcome == "success" else "FAILED"
    return "UNKNOWN"


def _run_dir(path: str) -> Path:
    folder = Path(path).resolve()
    if not (folder / "recipe.yaml").is_file():
        raise LwzError(path, None, "not a run folder (no recipe.yaml)")
    return folder


def cmd_status(args: argparse.Namespace) -> int:
    """The run's SLURM job and state, its last logged step and its requeues."""
    from lwz.track.compare import load_run
    from lwz.launch.requeue import read_requeues
    from lwz.launch.slurm import read_job_record

    folder = _run_dir(args.run)
    job = read_job_record(folder)
    run = load_run(folder)
    print(f"run       {folder}")
    print(f"job       {job['job_id']}  {job_state(job['job_id'], job['submitit_folder'])}  (submitted {job['submitted_at']}, "
          f"{job['tasks']} task(s))")
    last = run.rows[-1] if run.rows else {}
    reward = f" (reward/total {last['reward/total']:.3f})" if "reward/total" in last else ""
    print(f"progress  step {run.steps_done}/{run.planned_steps}{reward}" if run.rows else
          f"progress  no step logged yet (0/{run.planned_steps})")
    record = read_requeues(folder)
    starts = [e for e in record["events"] if e["event"] == "start" and e.get("job_id") == job["job_id"]]
    if starts:
        latest = record["events"][-1]
        if starts[-1].get("nodes"):
            print(f"nodes     {starts[-1]['nodes']} ({job['tasks']} task(s); `lwz logs RUN --rank N` for each)")
        print(f"requeues  {starts[-1]['restart_count']} of at most {record['max_requeues']} "
              f"(last event: {latest['event']} at {latest['at']})")
    print(f"log       {_log_path(job, 0)}")
    return 0


def _log_path(job: dict, rank: int) -> Path:
    return JobPaths(job["submitit_folder"], job_id=job["job_id"], task_id=rank).stdout


def cmd_logs(args: argparse.Namespace) -> int:
    """Print a rank's log (stdout and stderr together); -f follows it until the job ends."""
    from lwz.launch.slurm import read_job_record

    job = read_job_record(_run_dir(args.run))
    if not 0 <= args.rank < int(job["tasks"]):
        raise LwzError(args.run, "--rank", f"{args.rank} is not a rank of the job (0-{int(job['tasks']) - 1})")
    path = _log_path(job, args.rank)
    if not path.exists() and not args.follow:
        state = job_state(job["job_id"], job["submitit_folder"])
        raise LwzError(str(path), None, f"no log yet (job {job['job_id']} is {state})")
    offset = _print_from(path, 0)
    while args.follow:
        time.sleep(FOLLOW_POLL_S)
        new_offset = _print_from(path, offset)
        if new_offset == offset and job_state(job["job_id"], job["submitit_folder"]) not in ACTIVE_STATES:
            break
        offset = new_offset
    return 0


def _print_from(path: Path, offset: int) -> int:
    """Write the file's bytes from `offset` to stdout; returns the new offset."""
    if not path.exists():
        return offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    sys.stdout.write(data.decode("utf-8", errors="replace"))
    sys.stdout.flush()
    return offset + len(data)


def cmd_cancel(args: argparse.Namespace) -> int:
    """scancel the run's job (or, given an experiment folder with sweep.json, the whole array)."""
    from lwz.launch.slurm import read_job_record
    from lwz.launch.sweep import read_manifest

    manifest = read_manifest(Path(args.run))
    if manifest is not None:
        job_id, what = manifest["array_job_id"], f"job array of {manifest['name']} ({len(manifest['runs'])} runs)"
    else:
        folder = _run_dir(args.run)
        job_id, what = read_job_record(folder)["job_id"], str(folder)
    result = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise LwzError(args.run, None, f"scancel {job_id} failed: {result.stderr.strip()}")
    print(f"cancelled job {job_id}: {what}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Expand an experiment file, validate every run, then list it (--dry-run) or submit one job array."""
    from lwz.models_local.assets import build_recipe_assets
    from lwz.launch.sweep import (check_same_resources, check_sweep_inputs, describe, load_experiment, plan_sweep,
                                  submit_sweep)

    experiment = load_experiment(args.experiment)
    runs = plan_sweep(experiment, args.overrides)
    check_same_resources(experiment, runs)
    check_sweep_inputs(experiment, runs)
    if args.dry_run:
        shared = " ".join([*experiment.fixed, *args.overrides]) or "none"
        print(f"{experiment.name}: {len(runs)} run(s) of {experiment.base} (every run: {shared}); "
              "dry run, nothing submitted")
        for run in runs:
            print(f"  {describe(run)}")
        return 0
    for run in runs:   # models the runs build locally (${asset:...}) exist before any job starts
        build_recipe_assets(run.recipe)
    manifest = submit_sweep(experiment, runs, args.overrides)
    print(f"submitted job array {manifest['array_job_id']}: {len(runs)} run(s) of {experiment.name}")
    for run in manifest["runs"]:
        print(f"  {run['job_id']:<12} {run['name']}  {run['folder']}")
    print(f"manifest: {Path(manifest['submitit_folder']).parent / 'sweep.json'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Print a metrics table of the runs (one run: its summary) and write one PNG per metric into the
    compare folder."""
    from lwz.track.compare import comparison_table, load_run, plot_comparison, run_summary

    runs, default_out = _compare_targets(args.targets)
    loaded = [load_run(folder, name) for name, folder in runs]
    sys.stdout.write(run_summary(loaded[0]) if len(loaded) == 1 else comparison_table(loaded))
    out = Path(args.out) if args.out else default_out
    written = plot_comparison(loaded, out)
    print(f"plots: {len(written)} PNG file(s) in {out}")
    return 0


def _compare_targets(targets: list[str]) -> tuple[list[tuple[str, Path]], Path]:
    """(run name, folder) pairs and the default compare folder, from an experiment file, an
    experiment folder with sweep.json, or run folders."""
    from lwz.launch.sweep import expand, experiment_output_dir, load_experiment, read_manifest

    first = Path(targets[0])
    if first.is_file():
        overrides = targets[1:]
        experiment = load_experiment(first)
        out_dir = experiment_output_dir(experiment, overrides)
        manifest = read_manifest(out_dir)
        if manifest is not None:
            return [(r["name"], Path(r["folder"])) for r in manifest["runs"]], out_dir / "compare"
        runs = [(name, out_dir / name) for name, _ in expand(experiment) if (out_dir / name).is_dir()]
        if not runs:
            raise LwzError(str(first), None, f"no sweep.json and no run folders of this experiment in {out_dir}")
        return runs, out_dir / "compare"
    if len(targets) == 1 and (manifest := read_manifest(first)) is not None:
        return [(r["name"], Path(r["folder"])) for r in manifest["runs"]], first / "compare"
    folders = [Path(t).resolve() for t in targets]
    if len(folders) == 1:
        return [(folders[0].name, folders[0])], folders[0] / "compare"
    parents = {f.parent for f in folders}
    return [(f.name, f) for f in folders], (parents.pop() if len(parents) == 1 else Path.cwd()) / "compare"


def register(subparsers) -> None:
    """Add sweep, compare, status, logs and cancel to the `lwz` sub-commands."""
    p = subparsers.add_parser("sweep", help="run an experiment file (grid x variants) as one SLURM job array")
    p.add_argument("experiment", help="experiment file (base:, set:, grid:, variants:)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every run")
    p.add_argument("--dry-run", action="store_true", help="validate and list every run with its plan; submit nothing")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser("compare", help="table and plots of several runs' metrics")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="an experiment file [key=value ...], an experiment folder (sweep.json) or run folders")
    p.add_argument("--out", help="folder for the PNG plots (default: <experiment folder>/compare)")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("status", help="SLURM state, progress and requeues of a submitted run")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("logs", help="print (or follow) a rank's log of a submitted run")
    p.add_argument("run", help="run folder")
    p.add_argument("--rank", type=int, default=0, help="rank whose log to show (default: 0)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the job ends")
    p.set_defaults(func=cmd_logs)

    p = subparsers.add_parser("cancel", help="cancel a submitted run (or an experiment folder's job array)")
    p.add_argument("run", help="run folder, or experiment folder with sweep.json")
    p.set_defaults(func=cmd_cancel)
