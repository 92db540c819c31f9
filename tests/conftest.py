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
