"""A run's saved state with its long number lists as tensors: a checkpoint keeps a partial rollout's pool and a
batch generated ahead in a tensor file (`torch.save`), not as JSON, which is hundreds of MB at the paper's scale.

`pack` turns every non-empty list of Python ints into an int64 tensor and of Python floats into a float64 one
(both exact), recursively through dicts and lists; `unpack` turns them back into lists.
"""

from __future__ import annotations

from typing import Any

import torch


def pack(obj: Any) -> Any:
    """`obj` with its lists of ints and of floats as tensors."""
    if isinstance(obj, dict):
        return {key: pack(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        if obj and all(type(x) is int for x in obj):
            return torch.tensor(obj, dtype=torch.int64)
        if obj and all(type(x) is float for x in obj):
            return torch.tensor(obj, dtype=torch.float64)
        return [pack(x) for x in obj]
    return obj


def unpack(obj: Any) -> Any:
    """`pack`'s tensors back into lists of Python numbers."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {key: unpack(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [unpack(x) for x in obj]
    return obj
