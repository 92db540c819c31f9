"""A `datasets` hub name that resolves offline (no hub here): rows laid into a local datasets cache the way
`load_dataset` leaves a dataset it downloaded (CACHE/<owner>___<name>/default/0.0.0/<hash>/<name>-train.arrow),
which `load_dataset(name)` then finds in offline mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def cached_hub_dataset(monkeypatch, cache: Path, name: str, rows: list[dict]) -> str:
    """Put `rows` in `cache` as hub dataset `name` (owner/name), point `datasets` at it offline; the source
    string a recipe would give (hf:NAME:train)."""
    import datasets

    owner, short = name.split("/")
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    datasets.load_dataset("json", data_files=str(source), split="train", cache_dir=str(cache / "build"))
    built = next(p for p in (cache / "build" / "json").glob("*/*/*") if p.is_dir())
    target = cache / f"{owner}___{short}" / "default" / "0.0.0" / built.name
    shutil.copytree(built, target)
    (target / "json-train.arrow").rename(target / f"{short}-train.arrow")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return f"hf:{name}:train"
