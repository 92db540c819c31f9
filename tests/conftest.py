"""Shared test set-up: single-threaded torch, offline hubs, the fixture modules, and per-module folders that
go once the module's tests pass (a run's checkpoints are hundreds of MB; a suite keeps none it passed)."""

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixtures shared by the test modules, registered once here (a session fixture imported into several
# modules would be built once per module).
pytest_plugins = ["fixtures_models", "fixtures_slurm"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `-n 2 --dist loadgroup` (CI) the SLURM tests share one worker: its clusters are one set of
    daemons, ports and /etc/slurm (one worker at a time, in order); the rest spread over both workers."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Path]]:
    """`make(name)`: a new folder for runs a module's tests share; all of them are removed after the module
    unless a test has failed by then (then pytest keeps them, like a failed test's tmp_path)."""
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    if request.session.testsfailed == 0:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
