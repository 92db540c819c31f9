"""Session fixtures for locally built models (`from fixtures_models import tiny_qwen2`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lwz.tiny import tiny_qwen2_path


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    """The tiny random-weight Qwen2 folder with the Qwen2.5 tokenizer (built once, cached)."""
    return tiny_qwen2_path()
