"""Where lwz keeps models it builds locally (`${asset:NAME}` in recipes)."""

from __future__ import annotations

import os
from pathlib import Path

from lwz.errors import LwzError

# name -> "module:function" that builds the asset (once) and returns its folder
ASSETS = {"tiny-qwen2": "lwz.models_local.tiny:tiny_qwen2_path", "tiny-writing-rm": "lwz.rm.train:tiny_writing_rm_path",
          "smollm2-135m": "lwz.models_local.smollm2:smollm2_path"}
FOLDERS = {"tiny-qwen2": "tiny-qwen2", "tiny-writing-rm": "tiny-writing-rm-v2",
           "smollm2-135m": "smollm2-135m-instruct-v1"}


def cache_dir() -> Path:
    """The cache folder: $LWZ_CACHE, else ~/.cache/lwz."""
    return Path(os.environ.get("LWZ_CACHE", "~/.cache/lwz")).expanduser()


def asset_path(name: str) -> Path:
    """The folder of a locally built model asset (it may not be built yet)."""
    if name not in ASSETS:
        raise LwzError(None, f"${{asset:{name}}}", f"unknown asset (allowed: {', '.join(ASSETS)})")
    return cache_dir() / "models" / FOLDERS[name]


def build_recipe_assets(recipe) -> None:
    """Build the assets a recipe's model folders name (policy, tokenizer, reward models) that are not built
    yet: before a launch or a submission, so that no job starts without them."""
    import importlib

    folders = [recipe.model.path, recipe.model.tokenizer or recipe.model.path]
    paths = folders + [t.params["model"] for t in recipe.rewards.terms if t.name == "writing_rm"]
    for name, builder in ASSETS.items():
        if str(asset_path(name)) in paths:
            module, function = builder.split(":")
            getattr(importlib.import_module(module), function)()
