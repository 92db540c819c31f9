"""Where lwz keeps models it builds locally (`${asset:NAME}` in recipes)."""

from __future__ import annotations

import os
from pathlib import Path

from lwz.errors import LwzError

ASSETS = ("tiny-qwen2", "smollm2-135m")


def cache_dir() -> Path:
    """The cache folder: $LWZ_CACHE, else ~/.cache/lwz."""
    return Path(os.environ.get("LWZ_CACHE", "~/.cache/lwz")).expanduser()


def asset_path(name: str) -> Path:
    """The folder of a locally built model asset (it may not be built yet)."""
    if name not in ASSETS:
        raise LwzError(None, f"${{asset:{name}}}", f"unknown asset (allowed: {', '.join(ASSETS)})")
    return cache_dir() / "models" / name
