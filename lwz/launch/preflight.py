"""Checks of a run's inputs before it starts or waits in a queue: what the plan (a pure function of the
recipe) cannot see because it lives in files.

`check_inputs` reads the prompt files (every row, as the loop will), checks that the model, tokenizer
and reward-model folders exist with a config.json whose architecture matches what the recipe says,
and that the output folder can be written. Folders of local assets (`${asset:...}`) are built by
`lwz run` itself and are not required to exist yet. Each failure is one `LwzError` naming the file,
the row or the key.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lwz.models_local.assets import ASSETS, asset_path
from lwz.data.prompts import recipe_prompts
from lwz.errors import LwzError
from lwz.recipe.load import arch_from_hf_config
from lwz.recipe.schema import ArchCfg, Recipe
from lwz.rewards.writing_rm import check_reward_model_folder

__all__ = ["check_inputs"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def check_inputs(recipe: Recipe, produced: frozenset[str] = frozenset()) -> None:
    """Everything about the recipe's files that would otherwise fail inside the job; model keys in
    `produced` name folders an earlier stage of a pipeline writes, so they are not looked for yet."""
    if "model.path" not in produced:
        _check_model(recipe.model.path, "model.path", recipe.model.arch)
    tokenizer_key = "model.tokenizer" if recipe.model.tokenizer else "model.path"
    if tokenizer_key not in produced:
        _check_tokenizer(recipe.model.tokenizer or recipe.model.path, tokenizer_key)
    for i, term in enumerate(recipe.rewards.terms):
        key = f"rewards.terms.{i}.params.model"
        if term.name == "writing_rm" and key not in produced:
            if _check_model(term.params["model"], key, ArchCfg(**term.params["arch"])) is not None:
                check_reward_model_folder(term.params["model"], key)
    if recipe.stage == "reward_model":
        from lwz.rm.stage import recipe_pairs

        recipe_pairs(recipe)  # every row of the pairs files, and the held-out split
    elif recipe.stage == "pretrain":
        _check_sources(recipe)
    else:
        recipe_prompts(recipe)
    _check_writable(Path(recipe.logging.output_dir))


def _is_asset(path: str) -> bool:
    return any(str(asset_path(name)) == str(path) for name in ASSETS)


def _check_model(path: str, key: str, arch: ArchCfg) -> dict[str, Any] | None:
    """The folder's config.json (None for a local asset not built yet), checked against the recipe's arch."""
    folder = Path(path)
    if _is_asset(path) and not (folder / "config.json").is_file():
        return None
    if not folder.is_dir():
        raise LwzError(str(folder), key, "model folder not found")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise LwzError(str(folder), key, "no config.json: not an HF model folder")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LwzError(str(config_file), None, f"cannot read the model config: {e}") from None
    facts = arch_from_hf_config(config)
    arch_key = key.rsplit(".", 1)[0] + ".arch"
    for name, value in facts.items():
        said = getattr(arch, name, None)
        if said is not None and not _same(said, value):
            raise LwzError(str(config_file), f"{arch_key}.{name}", f"the recipe says {said!r}, the model's "
                           f"config.json says {value!r}")
    return config


def _check_tokenizer(path: str, key: str) -> None:
    folder = Path(path)
    if _is_asset(path) and not folder.exists():
        return
    if not folder.is_dir() or not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise LwzError(str(folder), key, f"no tokenizer there (none of {', '.join(_TOKENIZER_FILES)})")


def _check_writable(output_dir: Path) -> None:
    """The first existing folder on the way to `output_dir` must be a writable folder."""
    existing = output_dir.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise LwzError(str(output_dir), "logging.output_dir", f"cannot create run folders there ({existing} is "
                       "not a writable folder)")


def _same(said: object, value: object) -> bool:
    """Equal, floats to float32 precision (a config written from a GGUF stores 1e-5 as 9.9999997e-06)."""
    if isinstance(said, float) or isinstance(value, float):
        return math.isclose(float(said), float(value), rel_tol=1e-6)
    return said == value


def _check_sources(recipe: Recipe) -> None:
    """Each pretraining source is readable and its first row has the text field (a whole corpus is read
    when it is tokenized, at the start of the run)."""
    from lwz.data.rows import read_rows

    for i, src in enumerate(recipe.cpt.sources):
        key = f"cpt.sources.{i}.path"
        if src.path.endswith(".txt"):
            if not Path(src.path).is_file():
                raise LwzError(src.path, key, "not found")
            continue
        first = next(iter(read_rows(src.path, key)), None)
        if first is None:
            raise LwzError(src.path, key, "holds no rows")
        where, row = first
        if not isinstance(row.get(src.text_field), str):
            raise LwzError(where, src.text_field, f"{src.text_field!r} must be a string (set cpt.sources.{i}.text_field)")
