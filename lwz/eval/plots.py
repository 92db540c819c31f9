"""Evaluation plots, rendered off-screen (Agg) and written atomically as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

from lwz.track.plots import write_png  # noqa: E402


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write `fig` as PNG to `path` atomically and close it."""
    try:
        write_png(fig, path, dpi=120)
    finally:
        plt.close(fig)


def plot_length_scatter(
    required: Sequence[float], produced: Sequence[float], path: str | os.PathLike, title: str | None = None
) -> None:
    """Log-log scatter of required vs produced length with the y = x line (LongBench-Write's figure).

    Produced lengths of 0 cannot be drawn on a log axis; they are drawn at 1 so they stay visible.
    """
    assert len(required) == len(produced), "required and produced lengths must pair up"
    shown = [max(1.0, float(y)) for y in produced]
    low = min([*required, *shown, 50.0])
    high = max([*required, *shown, 100.0])
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(required, shown, s=60, c="tab:red", alpha=0.35, edgecolors="none")
    ax.plot([low, high], [low, high], "k--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low / 1.2, high * 1.2)
    ax.set_ylim(low / 1.2, high * 1.2)
    ax.set_xlabel("Required length")
    ax.set_ylabel("Output length")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
