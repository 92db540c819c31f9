"""Load a recipe: `base:` inheritance, `key=value` overrides, interpolation, validation.

Every user error becomes an `LwzError` naming the file (or "command line") and the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (ConfigAttributeError, ConfigKeyError, InterpolationResolutionError,
                              OmegaConfBaseException, ValidationError)

from lwz.data.rows import HUB_PREFIX
from lwz.errors import LwzError, did_you_mean
from lwz.recipe.schema import ArchCfg, Recipe
from lwz.recipe.settings import check_setting
from lwz.rewards.registry import REWARDS

COMMAND_LINE = "command line"
# Paths that are resolved against the folder of the file that sets them.
_FILE_RELATIVE = ("model.path", "model.tokenizer")
_FILE_LISTS = ("data.prompts", "rm.pairs", "rm.eval_pairs")  # lists of files relative to the recipe


def _asset_path(name: str) -> str:
    from lwz.models_local.assets import asset_path  # local: keeps recipe loading free of heavy imports
    return str(asset_path(name))


if not OmegaConf.has_resolver("asset"):
    OmegaConf.register_resolver("asset", _asset_path)


def load_recipe(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The validated `Recipe` of the file at `path` with `overrides` ("a.b=value") applied."""
    path = Path(path)
    cfg = OmegaConf.structured(Recipe)
    OmegaConf.set_struct(cfg, True)
    for layer_file, layer in _layers(path, chain=()):
        _open_free_form_dicts(cfg)
        _merge(cfg, layer, str(layer_file))
    for item in overrides:
        _apply_override(cfg, item)
    recipe = _to_object(cfg, str(path))
    _validate(recipe, str(path))
    _fill_mode_defaults(recipe)
    if recipe.rollout.replay:   # the job may start elsewhere
        recipe.rollout.replay = str(Path(recipe.rollout.replay).resolve())
    _fill_arch(recipe.model.arch, recipe.model.path)
    for term in recipe.rewards.terms:
        if term.name == "writing_rm":
            _fill_arch(term.params["arch"], term.params["model"])
    return recipe


# The modes with a pool of groups in flight: (rollout.over_sample, rollout.max_staleness) when left null.
POOL_DEFAULTS = {"partial": (1.0, 1), "async": (2.0, 2)}


def _fill_mode_defaults(recipe: Recipe) -> None:
    """The settings whose default depends on the rollout mode: a mode named alone works (GRPO only: the
    other stages use no rollout and must leave its section at the schema's defaults)."""
    if recipe.stage != "grpo":
        return
    rollout, algo = recipe.rollout, recipe.algo
    if rollout.mode in POOL_DEFAULTS:
        over_sample, max_staleness = POOL_DEFAULTS[rollout.mode]
        rollout.over_sample = over_sample if rollout.over_sample is None else rollout.over_sample
        rollout.max_staleness = max_staleness if rollout.max_staleness is None else rollout.max_staleness
    if rollout.stale_tokens is None:
        rollout.stale_tokens = "recompute" if rollout.mode in ("one_step_off", "async") else "mask"
    if algo.rollout_correction is None:
        algo.rollout_correction = "tis" if rollout.stale_tokens == "recompute" else "none"


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what the run folder keeps)."""
    return OmegaConf.to_yaml(OmegaConf.structured(recipe))


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise LwzError(str(path), None, "recipe file not found")
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise LwzError(str(path), None, f"invalid YAML: {line}{getattr(e, 'problem', None) or e}") from None
    if not isinstance(cfg, DictConfig):
        raise LwzError(str(path), None, "a recipe must be a mapping of sections (model:, actor:, ...)")
    _reject_base60(path)
    return cfg


def _reject_base60(path: Path) -> None:
    """YAML 1.1 reads an unquoted 48:00:00 as the integer 172800: such a value must be quoted."""
    nodes = [yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)]
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.MappingNode):
            nodes += [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            nodes += node.value
        elif isinstance(node, yaml.ScalarNode) and node.style is None and re.fullmatch(r"\d+(?::[0-5]?\d)+", node.value):
            raise LwzError(str(path), None, f"line {node.start_mark.line + 1}: YAML reads {node.value} as a base-60 "
                           f'number; quote it ("{node.value}")')


def _layers(path: Path, chain: tuple[Path, ...]) -> list[tuple[Path, DictConfig]]:
    """The file's inheritance chain, most basic first, each without its `base` key."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise LwzError(str(path), "base", f"inheritance cycle: {cycle}")
    cfg = _read_yaml(path)
    base = cfg.pop("base", None)
    layers: list[tuple[Path, DictConfig]] = []
    if base is not None:
        if not isinstance(base, str):
            raise LwzError(str(path), "base", f"must be a path to a recipe, got {base!r}")
        base_path = (path.parent / base) if not os.path.isabs(base) else Path(base)
        if not base_path.is_file():
            raise LwzError(str(path), "base", f"base recipe {base_path} not found (paths are relative to {path.parent})")
        layers = _layers(base_path, (*chain, resolved))
    _make_paths_absolute(cfg, path.parent)
    return layers + [(path, cfg)]


def _make_paths_absolute(cfg: DictConfig, folder: Path) -> None:
    for key in _FILE_RELATIVE:
        value = OmegaConf.select(cfg, key, throw_on_missing=False, default=None)
        if isinstance(value, str) and _is_relative_path(value):
            OmegaConf.update(cfg, key, str((folder / value).resolve()), merge=False)
    for source in OmegaConf.select(cfg, "cpt.sources", default=None) or []:
        path = source.get("path") if isinstance(source, DictConfig) else None
        if isinstance(path, str) and _is_relative_path(path) and not path.startswith(HUB_PREFIX):
            source.path = str((folder / path).resolve())
    for key in _FILE_LISTS:
        items = OmegaConf.select(cfg, key, default=None)
        if isinstance(items, ListConfig):
            OmegaConf.update(cfg, key, [str((folder / p).resolve()) if isinstance(p, str) and _is_relative_path(p)
                                        and not p.startswith(HUB_PREFIX) else p for p in items], merge=False)


def _is_relative_path(value: str) -> bool:
    return not (os.path.isabs(value) or value.startswith("${") or value.startswith("~"))


def _open_free_form_dicts(node: Any) -> None:
    """Let plain-dict fields (reward params, extra sbatch options) take new keys; sections stay strict."""
    if isinstance(node, DictConfig):
        if OmegaConf.get_type(node) is dict:
            OmegaConf.set_struct(node, False)
            return
        for key in node.keys():
            _open_free_form_dicts(node._get_node(key))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            _open_free_form_dicts(node._get_node(i))


def _merge(cfg: DictConfig, layer: DictConfig, where: str) -> None:
    try:
        cfg.merge_with(layer)
    except OmegaConfBaseException as e:
        raise _user_error(e, where, cfg) from None


def _apply_override(cfg: DictConfig, item: str) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise LwzError(COMMAND_LINE, item, "overrides are key=value (e.g. rollout.group_size=16)")
    value = _parse_value(raw)
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if parent is None and parent_key:
        raise _unknown_key_error(cfg, key, COMMAND_LINE)
    if isinstance(parent, ListConfig) and (not leaf.isdigit() or int(leaf) >= len(parent)):
        raise _unknown_key_error(cfg, key, COMMAND_LINE)
    target = OmegaConf.select(cfg, key, default=None)
    free_form = any(isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict for node in (parent, target))
    try:
        OmegaConf.update(cfg, key, value, merge=True, force_add=free_form)
    except OmegaConfBaseException as e:
        raise _user_error(e, COMMAND_LINE, cfg, key) from None


def _parse_value(raw: str) -> Any:
    """A YAML scalar/list/dict; YAML 1.1's on/off/yes/no and base-60 numbers (times) stay strings."""
    if not raw.strip():
        return ""
    if raw.strip().lower() in ("on", "off", "yes", "no", "y", "n") or re.fullmatch(r"[\d:-]*:[\d:-]*", raw.strip()):
        return raw  # YAML 1.1 reads 48:00:00 as the base-60 integer 172800
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _to_object(cfg: DictConfig, where: str) -> Recipe:
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise LwzError(where, missing[0], "is required but not set")
        return OmegaConf.to_object(cfg)
    except InterpolationResolutionError as e:
        key = getattr(e, "full_key", None)
        env = re.search(r"Environment variable '([^']+)' not found", str(e.msg))
        reason = f"environment variable {env.group(1)} is not set" if env else _first_line(e.msg)
        raise LwzError(where, key, f"cannot resolve interpolation: {reason}") from None
    except OmegaConfBaseException as e:
        raise _user_error(e, where, cfg) from None


def _user_error(e: OmegaConfBaseException, where: str, cfg: DictConfig, key: str | None = None) -> LwzError:
    full_key = getattr(e, "full_key", None) or key
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and full_key:
        return _unknown_key_error(cfg, full_key, where)
    if isinstance(e, ValidationError):
        value = getattr(e, "value", None)
        expected = _expected_type(full_key)
        return LwzError(where, full_key, f"{value!r} is not a valid {expected}" if expected else _first_line(e.msg))
    return LwzError(where, full_key, _first_line(getattr(e, "msg", str(e))))


def _unknown_key_error(cfg: DictConfig, full_key: str, where: str) -> LwzError:
    """'Key X not in section': lists the section's keys and suggests the closest."""
    parts = re.sub(r"\[(\d+)\]", r".\1", full_key).split(".")
    node: Any = cfg
    for i, part in enumerate(parts):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
            continue
        if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        section = ".".join(parts[:i]) or "the recipe"
        if isinstance(node, ListConfig):
            return LwzError(where, ".".join(parts[: i + 1]), f"no item {part} in {section} "
                            f"(it has {len(node)} item(s), indices 0-{len(node) - 1})")
        allowed = list(node.keys()) if isinstance(node, DictConfig) else []
        listing = f" (allowed: {', '.join(map(str, allowed))})" if allowed else ""
        return LwzError(where, ".".join(parts[: i + 1]),
                        f"unknown key in {section}{listing}{did_you_mean(part, allowed)}")
    return LwzError(where, full_key, "invalid key")


def _expected_type(full_key: str | None) -> str | None:
    if not full_key:
        return None
    cls: Any = Recipe
    ftype: Any = None
    for part in full_key.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return None
        ftype = fields[part].type
        cls = _resolve_type(ftype)
    return str(ftype).replace("Optional[", "").rstrip("]") if ftype else None


def _resolve_type(annotation: Any) -> Any:
    import lwz.recipe.schema as schema
    if isinstance(annotation, str):
        name = annotation.replace("Optional[", "").rstrip("]")
        return getattr(schema, name, None)
    return annotation


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else "invalid value"


def _validate(obj: Any, where: str, prefix: str = "") -> None:
    """Check every field's choices and bounds, then each reward term's params."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _validate(value, where, key + ".")
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                _validate(item, where, f"{key}.{i}.")
            continue
        check_setting(f.metadata, value, where, key)
    if isinstance(obj, Recipe) and obj.stage == "grpo":
        _validate_reward_terms(obj, where)


def _validate_reward_terms(recipe: Recipe, where: str) -> None:
    if not recipe.rewards.terms:
        raise LwzError(where, "rewards.terms", "at least one reward term is required (allowed names: "
                       f"{', '.join(REWARDS)})")
    seen: set[str] = set()
    for i, term in enumerate(recipe.rewards.terms):
        if term.name in seen:
            raise LwzError(where, f"rewards.terms.{i}.name", f"reward {term.name!r} appears twice")
        seen.add(term.name)
        schema = OmegaConf.structured(REWARDS[term.name])
        OmegaConf.set_readonly(schema, False)   # a frozen term class: its recipe values still merge in
        OmegaConf.set_struct(schema, True)
        prefix = f"rewards.terms.{i}.params"
        try:
            schema.merge_with(OmegaConf.create(term.params))
            missing = sorted(OmegaConf.missing_keys(schema))
            if missing:
                raise LwzError(where, f"{prefix}.{missing[0]}", f"is required by the {term.name!r} reward")
            params = OmegaConf.to_object(schema)   # the term itself: its own checks run
        except LwzError as e:
            if e.where:   # already placed (a required parameter)
                raise
            raise LwzError(where, f"{prefix}.{e.key}", e.message) from None
        except (ConfigKeyError, ConfigAttributeError) as e:
            allowed = [f.name for f in dataclasses.fields(REWARDS[term.name])]
            bad = str(getattr(e, "full_key", None) or getattr(e, "key", "")).split(".")[-1]
            raise LwzError(where, f"{prefix}.{bad}", f"unknown parameter of the {term.name!r} reward "
                           f"(allowed: {', '.join(allowed)}){did_you_mean(bad, allowed)}") from None
        except ValidationError as e:
            raise LwzError(where, f"{prefix}.{e.full_key}", f"{e.value!r} is not a valid value") from None
        _validate(params, where, prefix + ".")
        term.params = dataclasses.asdict(params)


_HF_KEYS = {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size",
            "num_attention_heads": "num_attention_heads", "num_key_value_heads": "num_key_value_heads",
            "head_dim": "head_dim", "intermediate_size": "intermediate_size", "vocab_size": "vocab_size",
            "max_position_embeddings": "max_position_embeddings",
            "tie_word_embeddings": "tie_word_embeddings", "rms_norm_eps": "rms_norm_eps"}


def arch_from_hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """ArchCfg fields from an HF config.json dict (Qwen2 and Llama families)."""
    model_type = config.get("model_type", "")
    facts = {ours: config[theirs] for ours, theirs in _HF_KEYS.items() if config.get(theirs) is not None}
    facts["family"] = "qwen2" if model_type.startswith("qwen2") else "llama" if model_type == "llama" else None
    facts["qkv_bias"] = True if model_type.startswith("qwen2") else bool(config.get("attention_bias", False))
    rope = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta")
    if rope is not None:
        facts["rope_theta"] = float(rope)
    facts.setdefault("num_key_value_heads", config.get("num_attention_heads"))
    facts.setdefault("tie_word_embeddings", False)
    return {k: v for k, v in facts.items() if v is not None}


def _fill_arch(arch: ArchCfg | dict, model_path: str) -> None:
    """Fill unset architecture facts from MODEL/config.json when that file is readable."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return
    try:
        hf = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LwzError(str(config_file), None, f"cannot read model config: {e}") from None
    for key, value in arch_from_hf_config(hf).items():
        if isinstance(arch, dict):
            arch[key] = value if arch.get(key) is None else arch[key]
        elif getattr(arch, key) is None:
            setattr(arch, key, value)
