"""What the end-to-end tests share: `lwz` as a user runs it, the learning recipe, metrics, the SIGKILL after a
checkpoint and its cheaper twin (rewinding a finished run), and waiting on SLURM jobs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lwz.commands.runs import ACTIVE_STATES, job_state

ROOT = Path(__file__).resolve().parent.parent
LEARN = ROOT / "tests" / "recipes" / "learn.yaml"
# Metrics that must agree between two layouts of one run, and the one_step_off layout on engines of their own
# (the mode named alone: stale tokens recomputed, tis correcting them).
COMPARED = ("reward/length", "actor/loss", "actor/grad_norm", "actor/entropy", "actor/ratio_mean",
            "rollout/logprob_diff", "response/tokens_mean", "length/response_mean")
ONE_STEP_OFF = ("cluster.gpus_per_node=3", "actor.tp=1", "rollout.colocate=false", "rollout.engines=1",
                "rollout.mode=one_step_off")


def lwz(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `python -m lwz.cli ARGS` in the repository root with OMP_NUM_THREADS=1; exit code, stdout, stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lwz.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def lwz_started(*args: str | Path) -> subprocess.Popen:
    """`python -m lwz.cli ARGS` in a session of its own (stdout and stderr together), not waited for."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "lwz.cli", *map(str, args)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_to_end(*args: str | Path) -> str:
    """`lwz ARGS` to a successful end; its output."""
    proc = lwz_started(*args)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    return out


def learning_recipe(tmp_path: Path, model: Path, *, steps: int = 6, prompts_per_step: int = 4, save_every: int = 0,
                    run: str = "r", wandb: str = "disabled") -> Path:
    """tests/recipes/learn.yaml with `model`, the schedule and a run folder under tmp_path/runs/learn/RUN."""
    recipe = tmp_path / "learn.yaml"
    recipe.write_text(f"""base: {LEARN}
model: {{path: {model}}}
schedule: {{steps: {steps}, prompts_per_step: {prompts_per_step}, save_every: {save_every}}}
logging: {{output_dir: {tmp_path / "runs"}, run: {run}, wandb: {{mode: {wandb}}}}}
""")
    return recipe


def metrics(run: Path) -> list[dict]:
    """The run's metrics.jsonl rows."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def logged_steps(run: Path) -> list[int]:
    """The steps the run has logged so far (none before its metrics file exists)."""
    return [row["step"] for row in metrics(run)] if (run / "metrics.jsonl").exists() else []


def kill_after_checkpoint(proc: subprocess.Popen, run: Path, timeout_s: float = 600) -> None:
    """SIGKILL the run's process group as soon as its first checkpoint is complete."""
    deadline = time.time() + timeout_s
    while not (run / "ckpt" / "latest").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:] if proc.stdout else ""
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def rewind(run: Path, step: int) -> None:
    """Leave a finished run as a SIGKILL right after its step-`step` checkpoint would: that checkpoint is the
    latest and the later ones are gone (metrics beyond it stay; the resumed run drops them). Resume tests
    use it where a real SIGKILL adds nothing (each stage kind keeps one real SIGKILL test)."""
    for later in (run / "ckpt").glob("step-*"):
        if int(later.name.removeprefix("step-")) > step:
            shutil.rmtree(later)
    (run / "ckpt" / "latest").write_text(f"step-{step:08d}\n")


def assert_resumed_equal(folder: Path, expected: list[dict], keys: tuple[str, ...]) -> None:
    """`lwz run FOLDER` resumes from the step-3 checkpoint to the uninterrupted run's metrics."""
    out = run_to_end("run", str(folder))
    assert "resumed from" in out and "step-00000003" in out
    got = metrics(folder)
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]
    for want, have in zip(expected, got):
        for key in keys:
            assert have[key] == pytest.approx(want[key], abs=1e-6), (have["step"], key)


def wait_for_state(job_id: str, accept: Callable[[str], bool], timeout_s: float) -> str:
    """Poll the SLURM job's state until `accept(state)`; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not accept(state := job_state(job_id)):
        assert time.monotonic() < deadline, f"job {job_id} still {state} after {timeout_s} s"
        time.sleep(0.5)
    return state


def wait_until_done(job_id: str, timeout_s: float) -> str:
    """The SLURM job's final state, once it has one."""
    return wait_for_state(job_id, lambda s: s not in ACTIVE_STATES and s != "UNKNOWN", timeout_s)
