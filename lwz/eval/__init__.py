"""Evaluation: LongBench-Write length scores, WritingBench critic scores, Arena-Write ratings."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def benchmark_file(name: str) -> Path:
    """Path of a shipped benchmark file (package data `lwz/assets/benchmarks/NAME`)."""
    path = Path(str(resources.files("lwz") / "assets" / "benchmarks" / name))
    assert path.is_file(), f"benchmark file {name} is missing from the package data ({path})"
    return path
