"""Shared test set-up: single-threaded torch on huge pages, offline hubs, the fixture modules, and per-module
folders that go once the module's tests pass (a run's checkpoints are hundreds of MB; a suite keeps none it passed)."""

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# PyTorch's own switch (read at its first allocation, so before torch is imported): CPU tensors of 2 MB and up on
# transparent huge pages. Where a page fault is slow (a VM without AVX-512 measured 5x: ten fresh 256 MB tensors in
# 4.1 s, 0.8 s with it), 4 KB faults were half the CPU time of an update.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixtures shared by the test modules, registered once here (a session fixture imported into several
# modules would be built once per module).
pytest_plugins = ["fixtures_models", "fixtures_slurm"]


SLURM_TESTS = "tests/slurm/"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under `-n 2` (CI) a worker takes a whole module at a time (its module fixtures, often a run or a
    torchrun world, are built once), and the SLURM tests as one unit, in order: their clusters are one set
    of daemons, ports and /etc/slurm. Units go out in collection order, which puts the slowest first (below).
    (xdist's own `xdist_group` marker does nothing under pytest 9.2, whose node ids it cannot rename.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndSlurmTests(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SLURM_TESTS if nodeid.startswith(SLURM_TESTS) else nodeid.split("::")[0]

    config.option.loadscopereorder = False
    return ModulesAndSlurmTests(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs a SLURM cluster lives in tests/slurm/ (the scheduler above keys on the folder). The
    SLURM tests run first, then the modules with the most slow tests: the long units start early and the
    quick ones fill the end of both workers."""
    strays = [item.nodeid for item in items if item.get_closest_marker("slurm") and not item.nodeid.startswith(SLURM_TESTS)]
    if strays:
        raise pytest.UsageError(f"SLURM tests outside {SLURM_TESTS}: {', '.join(strays)}")
    slow: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        slow[module] = slow.get(module, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: (not item.nodeid.startswith(SLURM_TESTS), -slow[item.nodeid.split("::")[0]]))


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
