"""HF safetensors <-> megatron-core GPTModel weights, for any TP rank and PP stage.

Layouts (Qwen2/Llama family): megatron's fused `linear_qkv` holds, per KV group, the group's
query heads then its key head then its value head; TP ranks hold contiguous groups. The fused
`linear_fc1` holds [gate; up] of the rank's shard. Column-parallel weights (qkv, fc1, vocab) are
split by rows, row-parallel ones (`linear_proj`, `linear_fc2`) by columns; norms are replicated.
Embedding rows are padded to a multiple of TP with zeros. Pipeline stages hold layer ranges.

HF -> megatron reads each rank's slices straight from the safetensors files (`safe_open`), so no
rank loads the whole model. Megatron -> HF gathers TP shards and broadcasts each pipeline stage's
tensors, so every rank sees the same `(hf_name, full_tensor)` sequence.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lwz.actor.model import Arch, arch_from_hf_config, unwrap_model
from lwz.atomic import new_folder

__all__ = [
    "load_hf_into_megatron",
    "iter_hf_weights",
    "hf_weight_shapes",
    "save_hf_folder",
    "export_hf_folder",
    "read_hf_config",
]

log = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"
HF_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class _Rule:
    """How one megatron parameter relates to HF tensors (`{i}` is the global layer index)."""

    hf: tuple[str, ...]
    kind: str  # replicated | row | vocab | qkv | gate_up


_LAYER_RULES = {
    "input_layernorm.weight": _Rule(("model.layers.{i}.input_layernorm.weight",), "replicated"),
    "self_attention.linear_qkv.layer_norm_weight": _Rule(
        ("model.layers.{i}.input_layernorm.weight",), "replicated"
    ),
    "self_attention.linear_qkv.weight": _Rule(
        tuple(f"model.layers.{{i}}.self_attn.{p}_proj.weight" for p in "qkv"), "qkv"
    ),
    "self_attention.linear_qkv.bias": _Rule(
        tuple(f"model.layers.{{i}}.self_attn.{p}_proj.bias" for p in "qkv"), "qkv"
    ),
    "self_attention.linear_proj.weight": _Rule(
        ("model.layers.{i}.self_attn.o_proj.weight",), "row"
    ),
    "pre_mlp_layernorm.weight": _Rule(
        ("model.layers.{i}.post_attention_layernorm.weight",), "replicated"
    ),
    "mlp.linear_fc1.layer_norm_weight": _Rule(
        ("model.layers.{i}.post_attention_layernorm.weight",), "replicated"
    ),
    "mlp.linear_fc1.weight": _Rule(
        ("model.layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.up_proj.weight"), "gate_up"
    ),
    "mlp.linear_fc2.weight": _Rule(("model.layers.{i}.mlp.down_proj.weight",), "row"),
}
_EMBEDDING = _Rule(("model.embed_tokens.weight",), "vocab")
_FINAL_NORM = _Rule(("model.norm.weight",), "replicated")
_LM_HEAD = _Rule(("lm_head.weight",), "vocab")
_SCORE = _Rule(("score.weight",), "replicated")  # a reward model's scalar head
_LAYER_NAME = re.compile(r"decoder\.layers\.(\d+)\.(.+)")


def read_hf_config(hf_dir: str | os.PathLike) -> dict[str, Any]:
    """The `config.json` dict of an HF model folder."""
    return json.loads((Path(hf_dir) / "config.json").read_text())


def _rules(
    model: torch.nn.Module, arch: Arch
) -> Iterator[tuple[str, torch.nn.Parameter, _Rule, int | None]]:
    """(megatron name, parameter, rule, global layer index) for every parameter of this rank."""
    layers = model.decoder.layers if hasattr(model, "decoder") else []
    for name, param in model.named_parameters():
        if name == "embedding.word_embeddings.weight":
            yield name, param, _EMBEDDING, None
        elif name == "decoder.final_layernorm.weight":
            yield name, param, _FINAL_NORM, None
        elif name == "output_layer.weight":
            head = _SCORE if arch.scalar_head else _EMBEDDING if arch.tie_word_embeddings else _LM_HEAD
            yield name, param, head, None
        elif (match := _LAYER_NAME.fullmatch(name)) and match.group(2) in _LAYER_RULES:
            layer = layers[int(match.group(1))].layer_number - 1
            yield name, param, _LAYER_RULES[match.group(2)], layer
        else:
            raise AssertionError(f"no HF mapping for megatron parameter {name}")


# ---------------------------------------------------------------- HF -> megatron


class _SafetensorsReader:
    """Reads slices of named tensors from an HF folder's (possibly sharded) safetensors."""

    def __init__(self, hf_dir: Path, stack: ExitStack):
        from safetensors import safe_open

        index = hf_dir / SAFETENSORS_INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        else:
            with safe_open(hf_dir / "model.safetensors", framework="pt") as f:
                weight_map = {key: "model.safetensors" for key in f.keys()}
        handles = {
            file: stack.enter_context(safe_open(hf_dir / file, framework="pt"))
            for file in set(weight_map.values())
        }
        self._handles = {key: handles[file] for key, file in weight_map.items()}

    def has(self, name: str) -> bool:
        return name in self._handles

    def rows(self, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        return self._handles[name].get_slice(name)[start:stop]

    def cols(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._handles[name].get_slice(name)[:, start:stop]


def load_hf_into_megatron(
    model: torch.nn.Module, hf_dir: str | os.PathLike, hf_config: dict | None = None
) -> None:
    """Copy this rank's TP shard / PP stage of the HF weights in `hf_dir` into `model`, in place.

    Every parameter of the model must come from the checkpoint, each read as a slice, except a reward
    model's scalar head when `hf_dir` is a causal LM (the head keeps its fresh initialisation).
    """
    from megatron.core import parallel_state

    hf_dir = Path(hf_dir)
    arch = arch_from_hf_config(hf_config or read_hf_config(hf_dir))
    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    inner = unwrap_model(model)
    with ExitStack() as stack, torch.no_grad():
        reader = _SafetensorsReader(hf_dir, stack)
        for name, param, rule, layer in _rules(inner, arch):
            names = [n.format(i=layer) for n in rule.hf]
            if rule is _SCORE and not reader.has(names[0]):
                log.info("%s has no %s: the scalar head starts fresh", hf_dir, names[0])
                continue
            shard = _read_shard(reader, names, rule.kind, arch, tp, rank, param.shape[0])
            assert shard.shape == param.shape, (
                f"{name}: HF gives {tuple(shard.shape)}, megatron has {tuple(param.shape)}"
            )
            param.copy_(shard)
    log.info("loaded %s into megatron (tp rank %d/%d)", hf_dir, rank, tp)


def _read_shard(
    reader: _SafetensorsReader,
    names: list[str],
    kind: str,
    arch: Arch,
    tp: int,
    rank: int,
    rows: int,
) -> torch.Tensor:
    if kind == "replicated":
        return reader.rows(names[0])
    if kind == "row":
        width = reader.rows(names[0], 0, 1).shape[1] // tp
        return reader.cols(names[0], rank * width, (rank + 1) * width)
    if kind == "vocab":
        start = rank * rows
        part = reader.rows(
            names[0], min(start, arch.vocab_size), min(start + rows, arch.vocab_size)
        )
        padding = part.new_zeros((rows - part.shape[0], *part.shape[1:]))
        return torch.cat([part, padding]) if padding.shape[0] else part
    if kind == "gate_up":
        width = arch.ffn_hidden_size // tp
        return torch.cat([reader.rows(n, rank * width, (rank + 1) * width) for n in names])
    if kind == "qkv":
        groups = arch.num_kv_heads // tp
        g0, g1, hd, hpg = rank * groups, (rank + 1) * groups, arch.head_dim, arch.heads_per_group
        q = reader.rows(names[0], g0 * hpg * hd, g1 * hpg * hd)
        k, v = (reader.rows(n, g0 * hd, g1 * hd) for n in names[1:])
        per_group = [t.reshape(groups, -1, *t.shape[1:]) for t in (q, k, v)]
        return torch.cat(per_group, dim=1).reshape(-1, *q.shape[1:])
    raise AssertionError(kind)


# ---------------------------------------------------------------- megatron -> HF


def hf_weight_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name of the architecture with its shape, in checkpoint order."""
    h, hd, f = arch.hidden_size, arch.head_dim, arch.ffn_hidden_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (arch.vocab_size, h)}
    for i in range(arch.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (arch.num_heads * hd, h)
        shapes[p + "self_attn.k_proj.weight"] = (arch.num_kv_heads * hd, h)
        shapes[p + "self_attn.v_proj.weight"] = (arch.num_kv_heads * hd, h)
        if arch.qkv_bias:
            shapes[p + "self_attn.q_proj.bias"] = (arch.num_heads * hd,)
            shapes[p + "self_attn.k_proj.bias"] = (arch.num_kv_heads * hd,)
            shapes[p + "self_attn.v_proj.bias"] = (arch.num_kv_heads * hd,)
        shapes[p + "self_attn.o_proj.weight"] = (h, arch.num_heads * hd)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (f, h)
        shapes[p + "mlp.up_proj.weight"] = (f, h)
        shapes[p + "mlp.down_proj.weight"] = (h, f)
    shapes["model.norm.weight"] = (h,)
    if arch.scalar_head:
        shapes["score.weight"] = (1, h)
    elif not arch.tie_word_embeddings:
        shapes["lm_head.weight"] = (arch.vocab_size, h)
    return shapes


def iter_hf_weights(
    model: torch.nn.Module, hf_config: dict[str, Any]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(hf_name, full_tensor)` for the whole model on every rank, in checkpoint order.

    Collective: every rank of the TP and PP groups must consume the iterator to the end.
    Tensors come on the model's device in its dtype; a tied output layer is not repeated.
    """
    from megatron.core import parallel_state

    arch = arch_from_hf_config(hf_config)
    inner = unwrap_model(model)
    tp_group = parallel_state.get_tensor_model_parallel_group()
    pp_group = parallel_state.get_pipeline_model_parallel_group()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    stage = parallel_state.get_pipeline_model_parallel_rank()
    param = next(inner.parameters())
    device, dtype = param.device, param.dtype
    assert all(p.dtype == dtype for p in inner.parameters()), "parameters of mixed dtypes"

    by_item: dict[str, list] = {}  # item -> [(name, param, rule, layer)]
    for entry in _rules(inner, arch):
        _, _, rule, layer = entry
        if rule.hf == _EMBEDDING.hf and entry[0] == "output_layer.weight":
            continue  # the tied copy on the last stage
        by_item.setdefault(_item_of(rule, layer), []).append(entry)
    owners = _item_owners(list(by_item), stage, pp, pp_group)
    shapes = hf_weight_shapes(arch)
    for item in _items(arch):
        names = [n for n in shapes if _item_of_name(n) == item]
        if item in by_item:
            local: dict[str, torch.Tensor] = {}
            for _, p, rule, layer in by_item[item]:
                local.update(_gather_full(p.detach(), rule, layer, arch, tp_group))
            tensors = [local[n].contiguous() for n in names]
        else:
            tensors = [torch.empty(shapes[n], device=device, dtype=dtype) for n in names]
        if pp > 1:
            tensors = _broadcast(tensors, owners[item], pp_group)
        yield from zip(names, tensors)


def _items(arch: Arch) -> list[str]:
    """Units broadcast between pipeline stages: the embedding, each layer, the head."""
    return ["embed", *(f"layer{i}" for i in range(arch.num_layers)), "head"]


def _item_of(rule: _Rule, layer: int | None) -> str:
    if layer is not None:
        return f"layer{layer}"
    return "embed" if rule.hf == _EMBEDDING.hf else "head"


def _item_of_name(hf_name: str) -> str:
    if hf_name.startswith("model.layers."):
        return f"layer{hf_name.split('.')[2]}"
    return "embed" if hf_name == "model.embed_tokens.weight" else "head"


def _item_owners(mine: list[str], stage: int, pp: int, pp_group) -> dict[str, int]:
    """Which pipeline stage holds each item."""
    if pp == 1:
        return {item: 0 for item in mine}
    gathered: list[list[str]] = [[] for _ in range(pp)]
    torch.distributed.all_gather_object(gathered, mine, group=pp_group)
    return {item: s for s, items in enumerate(gathered) for item in items}


def _broadcast(tensors: list[torch.Tensor], owner_stage: int, pp_group) -> list[torch.Tensor]:
    """Send one item's tensors from the owning stage to the whole pipeline group, as one buffer."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    src = torch.distributed.get_process_group_ranks(pp_group)[owner_stage]
    torch.distributed.broadcast(flat, src=src, group=pp_group)
    return [
        chunk.view(t.shape) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)
    ]


def _gather_full(
    shard: torch.Tensor, rule: _Rule, layer: int | None, arch: Arch, tp_group
) -> dict[str, torch.Tensor]:
    names = [n.format(i=layer) for n in rule.hf]
    tp = torch.distributed.get_world_size(tp_group)
    if rule.kind == "replicated":
        return {names[0]: shard}
    shards = [shard]
    if tp > 1:
        shards = [torch.empty_like(shard) for _ in range(tp)]
        torch.distributed.all_gather(shards, shard.contiguous(), group=tp_group)
    if rule.kind == "row":
        return {names[0]: torch.cat(shards, dim=1)}
    if rule.kind == "vocab":
        return {names[0]: torch.cat(shards)[: arch.vocab_size]}
    if rule.kind == "gate_up":
        gates, ups = zip(*(s.chunk(2) for s in shards))
        return {names[0]: torch.cat(gates), names[1]: torch.cat(ups)}
    if rule.kind == "qkv":
        hd, hpg = arch.head_dim, arch.heads_per_group
        grouped = torch.cat(shards).reshape(arch.num_kv_heads, (hpg + 2) * hd, *shard.shape[1:])
        q, k, v = grouped.split([hpg * hd, hd, hd], dim=1)
        return {n: t.reshape(-1, *shard.shape[1:]) for n, t in zip(names, (q, k, v))}
    raise AssertionError(rule.kind)


# ---------------------------------------------------------------- HF folders


def save_hf_folder(
    out_dir: str | os.PathLike,
    weights: Iterable[tuple[str, torch.Tensor]],
    hf_config: dict[str, Any],
    *,
    source_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write an HF model folder (config.json, safetensors shards + index) from `weights`.

    Tokenizer and generation files are copied from `source_dir` when given. The folder appears
    atomically (built under a temporary name, then renamed); raises FileExistsError if it exists.
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} already exists")
    with new_folder(out) as tmp:
        files: list[str] = []
        shard: dict[str, torch.Tensor] = {}
        shard_bytes = total_bytes = 0
        for name, tensor in weights:
            nbytes = tensor.numel() * tensor.element_size()
            if shard and shard_bytes + nbytes > max_shard_bytes:
                files.append(_write_shard(tmp, shard, len(files)))
                shard, shard_bytes = {}, 0
            shard[name] = tensor.detach().to("cpu", copy=True).contiguous()
            shard_bytes += nbytes
            total_bytes += nbytes
        files.append(_write_shard(tmp, shard, len(files)))
        _name_shards(tmp, files, total_bytes)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
        for side in HF_SIDE_FILES if source_dir else ():
            if (Path(source_dir) / side).is_file():
                shutil.copy2(Path(source_dir) / side, tmp / side)
    return out


def _write_shard(folder: Path, tensors: dict[str, torch.Tensor], number: int) -> str:
    from safetensors.torch import save_file

    file = f"shard-{number}.safetensors"
    save_file(tensors, str(folder / file), metadata={"format": "pt"})
    return file


def _name_shards(folder: Path, files: list[str], total_bytes: int) -> None:
    """Rename shard files to HF's names and write the index when there is more than one."""
    from safetensors import safe_open

    if len(files) == 1:
        os.rename(folder / files[0], folder / "model.safetensors")
        return
    weight_map = {}
    for i, file in enumerate(files):
        final = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
        os.rename(folder / file, folder / final)
        with safe_open(folder / final, framework="pt") as f:
            weight_map.update({key: final for key in f.keys()})
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))


def export_hf_folder(
    model: torch.nn.Module,
    hf_config: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    source_dir: str | os.PathLike | None = None,
    writer_rank: int = 0,
) -> Path:
    """Collective: all ranks gather the weights; global rank `writer_rank` writes the HF folder."""
    weights = iter_hf_weights(model, hf_config)
    if torch.distributed.get_rank() == writer_rank:
        save_hf_folder(out_dir, weights, hf_config, source_dir=source_dir)
    else:
        for _ in weights:
            pass
    torch.distributed.barrier()
    return Path(out_dir)
