"""Compare runs: a table of key metrics and one PNG per metric with a line per run.

Reads only run folders (metrics.jsonl, recipe.yaml, eval/BENCH/step-N/summary.json); see DESIGN.md's
run-folder contract.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from lwz.errors import LwzError
from lwz.track.plots import write_png
from lwz.track import METRICS_FILE
from lwz.track import read_metrics as read_metrics_file

log = logging.getLogger(__name__)

REWARD_PREFIX = "reward/"
TOTAL_REWARD = "reward/total"
ANSWER_LENGTH = "length/answer_mean"
RESPONSE_LENGTH = "length/response_mean"
STEP_TIME = "time/step"
TOKENS_PER_S = "time/tokens_per_s"
TRUNCATED = "response/truncated_rate"
REPETITIVE = "hack/repetitive_rate"   # responses over the format term's repetition limits: loops to reach a length
TAIL_RATIO = "rollout/tail_ratio"
MEANS = (STEP_TIME, TOKENS_PER_S, TAIL_RATIO)   # the table gives their mean over the steps, not the last value


@dataclass(frozen=True)
class RunMetrics:
    """One run's name, folder, planned steps (None if unknown) and metric rows by step."""

    name: str
    folder: Path
    planned_steps: int | None
    rows: list[dict[str, float]]
    evals: dict[str, tuple[int, float]] = field(default_factory=dict)  # bench -> (step, score), the latest

    @property
    def steps_done(self) -> int:
        return int(self.rows[-1]["step"]) if self.rows else 0

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one metric, skipping rows without it."""
        points = [(row["step"], row[key]) for row in self.rows if key in row and math.isfinite(row[key])]
        return [s for s, _ in points], [v for _, v in points]


def read_metrics(folder: Path) -> list[dict[str, float]]:
    """The run folder's metrics rows by step (lwz.track.read_metrics)."""
    return read_metrics_file(Path(folder) / METRICS_FILE)


def load_run(folder: Path, name: str | None = None) -> RunMetrics:
    """A run folder's metrics and planned steps (from its recipe.yaml)."""
    folder = Path(folder)
    if not (folder / "recipe.yaml").is_file() and not (folder / METRICS_FILE).is_file():
        raise LwzError(str(folder), None, "not a run folder (no recipe.yaml or metrics.jsonl)")
    planned = None
    if (folder / "recipe.yaml").is_file():
        recipe = yaml.safe_load((folder / "recipe.yaml").read_text()) or {}
        planned = (recipe.get("schedule") or {}).get("steps")
    return RunMetrics(name or folder.name, folder, planned, read_metrics(folder), read_evals(folder))


def read_evals(folder: Path) -> dict[str, tuple[int, float]]:
    """The score of each benchmark's latest evaluated step (`lwz eval RUN` or eval during training)."""
    evals = {}
    for summary in sorted(Path(folder).glob("eval/*/step-*/summary.json")):
        step = int(summary.parent.name.removeprefix("step-"))
        score = json.loads(summary.read_text()).get("score")
        if isinstance(score, (int, float)) and step >= evals.get(summary.parent.parent.name, (-1, 0.0))[0]:
            evals[summary.parent.parent.name] = (step, float(score))
    return evals


def metric_keys(runs: Sequence[RunMetrics]) -> list[str]:
    """The compared metrics present in any run: reward/total, each reward/*, answer and response length,
    truncation, repetitive responses, step time, trained tokens per second and the rollout's tail ratio."""
    present = {key for run in runs for row in run.rows for key in row}
    rewards = sorted(k for k in present if k.startswith(REWARD_PREFIX) and k != TOTAL_REWARD)
    return [k for k in (TOTAL_REWARD, *rewards, ANSWER_LENGTH, RESPONSE_LENGTH, TRUNCATED, REPETITIVE, STEP_TIME,
                        TOKENS_PER_S, TAIL_RATIO) if k in present]


def comparison_table(runs: Sequence[RunMetrics]) -> str:
    """Rewards as 'final (best)', lengths and truncation final, step time, tokens/s and tail ratio mean, each benchmark's latest score (its step);
    '-' where a run lacks one."""
    keys = metric_keys(runs)
    benches = sorted({bench for run in runs for bench in run.evals})
    header = ["run", "steps", *(_column_title(k) for k in keys), *(f"eval {b} (step)" for b in benches)]
    table = [header] + [[run.name, _steps(run), *(_cell(run, k) for k in keys),
                         *(_eval_cell(run, b) for b in benches)] for run in runs]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def run_summary(run: RunMetrics, window: int = 3) -> str:
    """One run at a glance: each reward term, length against its target, truncation, the reward-hacking
    monitors and the train/inference mismatch, first vs last steps (means over `window` steps), and the
    time split of a step."""
    rows = run.rows
    if not rows:
        return f"{run.name}: no step logged yet\n"
    n = min(window, max(1, len(rows) // 2))
    first, last = rows[:n], rows[-n:]
    span = f"steps {first[0]['step']:g}-{first[-1]['step']:g}" if n > 1 else f"step {first[0]['step']:g}"
    later = f"steps {last[0]['step']:g}-{last[-1]['step']:g}" if n > 1 else f"step {last[0]['step']:g}"
    present = {key for row in rows for key in row}
    groups = [("rewards", [TOTAL_REWARD] + sorted(k for k in present if k.startswith(REWARD_PREFIX) and k != TOTAL_REWARD)),
              ("length", ["length/target_mean", ANSWER_LENGTH, "hack/answer_length_to_target", "hack/answer_in_range_rate",
                          RESPONSE_LENGTH, "length/response_in_range_rate",
                          "length/think_mean", "response/tokens_mean", "response/truncated_rate"]),
              ("hacking", sorted(k for k in present if k.startswith("hack/") and "length" not in k
                                 and "in_range" not in k)),
              ("mismatch", sorted(k for k in present if k.startswith("rollout/")))]
    lines = [f"run {run.name}: {_steps(run)} steps ({run.folder})",
             f"{'':<34}{span:>16}{later:>16}{'change':>10}"]
    for title, keys in groups:
        keys = [k for k in keys if k in present]
        if keys:
            lines.append(f"{title}")
        for key in keys:
            a, b = _mean(first, key), _mean(last, key)
            change = "" if a is None or b is None else f"{b - a:+.3g}"
            lines.append(f"  {key:<32}{_number(a):>16}{_number(b):>16}{change:>10}")
    phases = [k for k in ("time/rollout", "time/reward", "time/update", "time/sync") if k in present]
    if phases and STEP_TIME in present:
        total = sum(_mean(rows, k) or 0.0 for k in phases) or 1.0
        split = ", ".join(f"{k.split('/')[1]} {(_mean(rows, k) or 0) / total:.0%}" for k in phases)
        lines.append(f"time: {_mean(rows, STEP_TIME):.1f} s/step ({split})")
    return "\n".join(lines) + "\n"


def _mean(rows: Sequence[dict[str, float]], key: str) -> float | None:
    values = [row[key] for row in rows if key in row and math.isfinite(row[key])]
    return sum(values) / len(values) if values else None


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def plot_comparison(runs: Sequence[RunMetrics], out_dir: Path) -> list[Path]:
    """One PNG per compared metric (reward_total.png, ...), one line per run; returns the files."""
    written = []
    for key in metric_keys(runs):
        figure = Figure(figsize=(8, 4.5), layout="constrained")
        axes = figure.add_subplot()
        axes.set_title(key)
        axes.set_xlabel("step")
        for run in runs:
            steps, values = run.series(key)
            if steps:
                axes.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=run.name)
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
        written.append(write_png(figure, Path(out_dir) / f"{key.replace('/', '_')}.png"))
    return written


def _column_title(key: str) -> str:
    if key.startswith(REWARD_PREFIX):
        return f"{key} final (best)"
    return f"{key} mean" if key in MEANS else f"{key} final"


def _steps(run: RunMetrics) -> str:
    return f"{run.steps_done}/{run.planned_steps}" if run.planned_steps else str(run.steps_done)


def _cell(run: RunMetrics, key: str) -> str:
    _, values = run.series(key)
    if not values:
        return "-"
    if key.startswith(REWARD_PREFIX):
        return f"{values[-1]:.3f} ({max(values):.3f})"
    if key == STEP_TIME:
        return f"{sum(values) / len(values):.1f}s"
    value = sum(values) / len(values) if key in MEANS else values[-1]
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _eval_cell(run: RunMetrics, bench: str) -> str:
    if bench not in run.evals:
        return "-"
    step, score = run.evals[bench]
    return f"{score:.1f} ({step})"
