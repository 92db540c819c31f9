"""How a setting is declared (`setting`: a dataclass field with its documentation, choices and bounds) and
checked (`check_settings`), for the recipe schema and the reward terms' own parameters alike.

`ArchCfg` lives here too: both the policy's section and the writing reward model's parameters use it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Optional

from omegaconf import MISSING

from lwz.errors import LwzError, did_you_mean


def setting(default: Any = MISSING, doc: str = "", *, choices: tuple[str, ...] | None = None,
            ge: float | None = None, gt: float | None = None, le: float | None = None,
            factory: Any = None) -> Any:
    """A dataclass field with its documentation and allowed values."""
    metadata = {"doc": doc, "choices": choices, "ge": ge, "gt": gt, "le": le}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def check_setting(meta: Any, value: Any, where: str | None, key: str) -> None:
    """LwzError naming `key` when `value` is not among the field's choices or outside its bounds."""
    if value is None or isinstance(value, bool):
        return
    choices = meta.get("choices")
    if choices and value not in choices:
        raise LwzError(where, key, f"{value!r} is not allowed (allowed: {', '.join(choices)}){did_you_mean(value, choices)}")
    for bound, test, text in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                              ("le", lambda v, b: v <= b, "<=")):
        limit = meta.get(bound)
        if limit is not None and isinstance(value, (int, float)) and not test(value, limit):
            raise LwzError(where, key, f"{value} is out of range (must be {text} {limit:g})")


_NEEDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _is_type(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, Real) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_settings(obj: Any) -> None:
    """LwzError naming the first scalar field of dataclass `obj` whose value has the wrong type (null only where
    the field is Optional) or breaks its choices or bounds; for objects built in code, not from a recipe."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        kind = next((a for a in args if a is not type(None)), hint) if optional else hint
        if kind not in _NEEDS:
            continue
        if value is None and optional:
            continue
        if not _is_type(value, kind):
            raise LwzError(None, f.name, f"{value!r} is invalid: need {_NEEDS[kind]}")
        check_setting(f.metadata, value, None, f.name)


@dataclass
class ArchCfg:
    """Architecture facts; unset (null) fields are read from `model.path`/config.json."""

    family: Optional[str] = setting(None, "Model family.", choices=("qwen2", "llama"))
    num_layers: Optional[int] = setting(None, "Transformer layers (HF num_hidden_layers).", ge=1)
    hidden_size: Optional[int] = setting(None, "Hidden size.", ge=1)
    num_attention_heads: Optional[int] = setting(None, "Query heads.", ge=1)
    num_key_value_heads: Optional[int] = setting(None, "KV heads (grouped-query attention).", ge=1)
    head_dim: Optional[int] = setting(None, "Head dimension; null: hidden_size / num_attention_heads.", ge=1)
    intermediate_size: Optional[int] = setting(None, "SwiGLU MLP inner size.", ge=1)
    vocab_size: Optional[int] = setting(None, "Vocabulary size of the embedding (HF config).", ge=1)
    max_position_embeddings: Optional[int] = setting(None, "Longest context the model supports.", ge=1)
    qkv_bias: Optional[bool] = setting(None, "Bias on the Q/K/V projections (Qwen2: true).")
    tie_word_embeddings: Optional[bool] = setting(None, "Output layer shares the input embedding.")
    rope_theta: Optional[float] = setting(None, "RoPE base.", gt=0)
    rms_norm_eps: Optional[float] = setting(None, "RMSNorm epsilon.", gt=0)
