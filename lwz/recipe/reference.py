"""The recipe reference (markdown tables) rendered from the schema; the README embeds it.

`python -m lwz.recipe.reference README.md` rewrites the README's section between the markers.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

from omegaconf import MISSING

from lwz import atomic
from lwz.recipe import schema
from lwz.rewards.registry import REWARDS

START, END = "<!-- recipe-reference:start -->", "<!-- recipe-reference:end -->"


def _default(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return "" if dataclasses.is_dataclass(value) else f"`{value}`"
    if f.default == MISSING:
        return "**required**"
    return f"`{'null' if f.default is None else f.default}`"


def _section(title: str, cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = [f"### `{title}`", "", cls.__doc__.strip().split("\n\n")[0], "", "| key | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for f in dataclasses.fields(cls):
        ftype = hints[f.name]
        if dataclasses.is_dataclass(ftype):
            nested.append((f"{title}.{f.name}", ftype))
            continue
        type_name = str(ftype).replace("typing.", "").replace("Optional[", "").replace("]", "").replace("[", " of ")
        type_name = getattr(ftype, "__name__", type_name) if not typing.get_args(ftype) else type_name
        doc = f.metadata.get("doc", "")
        if f.metadata.get("choices"):
            doc += " One of: " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
        lines.append(f"| `{f.name}` | {type_name} | {_default(f)} | {doc} |")
    lines.append("")
    for sub_title, sub_cls in nested:
        lines += _section(sub_title, sub_cls)
    return lines


def render_reference() -> str:
    """Markdown tables of every recipe section and of each reward's params."""
    lines: list[str] = []
    top: list[str] = []
    for f in dataclasses.fields(schema.Recipe):
        cls = typing.get_type_hints(schema.Recipe)[f.name]
        if dataclasses.is_dataclass(cls):
            lines += _section(f.name, cls)
        else:
            top.append(f"`{f.name}` ({cls.__name__}, default {_default(f)}): {f.metadata['doc'].rstrip('.')}")
    lines = ["Top level: " + "; ".join(top) + ". `base:` names a recipe to inherit (relative to this file)", "",
             *lines]
    for name, cls in REWARDS.items():
        lines += _section(f"rewards.terms[name={name}].params", cls)
    return "\n".join(lines).rstrip() + "\n"


def embed(readme: str) -> str:
    """`readme` with the reference section replaced by the current one."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render_reference()}{END}{tail}"


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    atomic.write_text(path, embed(path.read_text()))
