"""Training curves from metrics rows ({"step": n, "reward/length": ..., ...}) as PNG files.

Rendered with a bare matplotlib `Figure` (no pyplot, no global state) and written atomically.
A plot whose metrics are absent from every row is skipped.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lwz import atomic

logger = logging.getLogger(__name__)

REWARD_PREFIX = "reward/"
TOTAL_REWARD = "reward/total"
LENGTH_KEYS = ("length/answer_mean", "length/response_mean", "length/target_mean")
THINK_KEYS = ("length/think_mean",)
TIME_KEYS = ("time/rollout", "time/reward", "time/update", "time/sync")

Rows = Sequence[Mapping[str, float]]


def write_png(figure: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Render `figure` as PNG and write it to `path` atomically (every PNG lwz writes goes through here)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    atomic.write_bytes(path, buffer.getvalue())
    return Path(path)


def plot_metrics(rows: Rows, plots_dir: Path) -> list[Path]:
    """Write rewards.png, length.png, think_length.png and step_time.png; returns the files written."""
    reward_keys = sorted({key for row in rows for key in row if key.startswith(REWARD_PREFIX)})
    figures = {
        "rewards.png": _lines(rows, reward_keys, "Rewards", "reward"),
        "length.png": _lines(rows, LENGTH_KEYS, "Length vs target", "words"),
        "think_length.png": _lines(rows, THINK_KEYS, "Think length", "words"),
        "step_time.png": _stacked_bars(rows, TIME_KEYS, "Step time", "seconds"),
    }
    written = []
    for name, figure in figures.items():
        if figure is None:
            continue
        written.append(write_png(figure, plots_dir / name))
    logger.debug("wrote plots %s", [path.name for path in written])
    return written


def _series(rows: Rows, key: str) -> tuple[list[float], list[float]]:
    points = [(row["step"], row[key]) for row in rows if key in row]
    return [step for step, _ in points], [value for _, value in points]


def _figure(title: str, ylabel: str) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    return figure, axes


def _lines(rows: Rows, keys: Sequence[str], title: str, ylabel: str) -> Figure | None:
    present = [key for key in keys if any(key in row for row in rows)]
    if not present:
        return None
    figure, axes = _figure(title, ylabel)
    for key in present:
        steps, values = _series(rows, key)
        emphasis = {"color": "black", "linewidth": 2.5} if key == TOTAL_REWARD else {}
        axes.plot(steps, values, marker="." if len(steps) < 50 else None, label=key, **emphasis)
    axes.legend(fontsize="small")
    return figure


def _stacked_bars(rows: Rows, keys: Sequence[str], title: str, ylabel: str) -> Figure | None:
    present = [key for key in keys if any(key in row for row in rows)]
    if not present:
        return None
    figure, axes = _figure(title, ylabel)
    timed = [row for row in rows if any(key in row for key in present)]
    steps = [row["step"] for row in timed]
    bottom = [0.0] * len(timed)
    for key in present:
        heights = [row.get(key, 0.0) for row in timed]
        axes.bar(steps, heights, bottom=bottom, width=0.8, label=key)
        bottom = [b + h for b, h in zip(bottom, heights)]
    axes.legend(fontsize="small")
    return figure
