"""Preference pairs for the writing reward model: loading, splitting, and a small synthetic set.

Pairs are rows with `prompt`, `chosen`, `rejected` (non-empty strings; the field names are settings)
and optionally `kind` (a label reported per kind in the metrics), from JSONL/parquet/CSV files,
`save_to_disk` folders or `datasets` names (`lwz.data.rows`).

`synthetic_pairs` builds a small English set from the prose shipped in `lwz/assets/benchmarks`
(WritingBench queries and LongBench-Write prompts, Apache-2.0): each chosen answer is a run of
consecutive sentences; its rejected twins are one sentence repeated (the repetition hack the paper
reports), a word salad of the same words, and the passage cut off mid-sentence (an unfinished
answer). Prompts are the short English LongBench-Write prompts. (Sentence-order shuffles of
3-sentence passages stayed at chance for a small encoder after a CPU-minute of training, so they
are not in the set.)
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

from lwz.atomic import write_text
from lwz.data.rows import read_rows
from lwz.errors import LwzError
from lwz.text import has_cjk

FIELDS = ("prompt", "chosen", "rejected")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


@dataclass(frozen=True)
class PreferencePair:
    """`chosen` is the better answer to `prompt` than `rejected`."""

    prompt: str
    chosen: str
    rejected: str
    kind: str = ""


def load_pair_sources(sources: Sequence[str], *, prompt_field: str = "prompt", chosen_field: str = "chosen",
                      rejected_field: str = "rejected", kind_field: str = "kind", key: str = "rm.pairs"
                      ) -> list[PreferencePair]:
    """The pairs of every source (`lwz.data.rows.read_rows`: files, save_to_disk folders, hf:NAME); LwzError
    naming the source and row of the first bad one."""
    if not sources:
        raise LwzError(None, key, "no pair sources given")
    setting = key.rsplit(".", 1)[0]  # "rm": the error names the recipe field to set
    pairs = []
    for source in sources:
        for where, row in read_rows(str(source), key):
            for field in (prompt_field, chosen_field, rejected_field):
                if not isinstance(row.get(field), str) or not row[field].strip():
                    name = {prompt_field: "prompt", chosen_field: "chosen", rejected_field: "rejected"}[field]
                    raise LwzError(where, field, f"{field!r} must be a non-empty string (set {setting}.{name}_field)")
            if row[chosen_field] == row[rejected_field]:
                raise LwzError(where, chosen_field, f"{chosen_field!r} and {rejected_field!r} are the same text")
            kind = row.get(kind_field)
            pairs.append(PreferencePair(row[prompt_field], row[chosen_field], row[rejected_field],
                                        kind if isinstance(kind, str) else ""))
    if len(pairs) < 2:
        raise LwzError(", ".join(map(str, sources)), key, f"{len(pairs)} pairs: need at least 2 (train and held out)")
    return pairs


def load_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """The pairs of one JSONL file with the fields prompt, chosen, rejected[, kind]."""
    return load_pair_sources([str(path)], key="pairs")


def write_pairs(path: str | os.PathLike, pairs: Sequence[PreferencePair]) -> None:
    """Write pairs as JSONL (atomically)."""
    write_text(path, "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in pairs))


def split_pairs(pairs: Sequence[PreferencePair], eval_fraction: float, seed: int
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held out): pairs sharing a prompt and chosen answer stay on one side, so held-out
    accuracy is measured on answers the model never saw."""
    if not 0 < eval_fraction < 1:
        raise LwzError(None, "rm.eval_fraction", f"{eval_fraction} is invalid: need 0 < f < 1")
    groups: dict[tuple[str, str], list[PreferencePair]] = {}
    for p in pairs:
        groups.setdefault((p.prompt, p.chosen), []).append(p)
    if len(groups) < 2:
        raise LwzError(None, "pairs", "all pairs share one chosen answer: nothing to hold out")
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_eval = min(len(keys) - 1, max(1, round(eval_fraction * len(keys))))
    held = [p for k in keys[:n_eval] for p in groups[k]]
    train = [p for k in keys[n_eval:] for p in groups[k]]
    return train, held


def _english_prose() -> tuple[list[list[str]], list[str]]:
    """(documents as sentence lists, short English writing prompts) from the packaged benchmark files."""
    bench = files("lwz") / "assets" / "benchmarks"
    docs, prompts = [], []
    for line in (bench / "writingbench_sample.jsonl").read_text(encoding="utf-8").splitlines():
        query = json.loads(line)["query"]
        for block in re.split(r"\n\s*\n|\n(?=\d+\.|\*\*|#)", query):
            text = " ".join(block.split())
            sentences = [s for s in _SENTENCE_END.split(text) if 6 <= len(s.split()) <= 60 and not has_cjk(s)]
            if len(sentences) >= 3:
                docs.append(sentences)
    for line in (bench / "longbench_write_en.jsonl").read_text(encoding="utf-8").splitlines():
        prompt = " ".join(json.loads(line)["prompt"].split())
        if len(prompt.split()) <= 25:
            prompts.append(prompt)
    return docs, prompts


def request_prose(rows: Sequence[dict], field: str = "prompt") -> list[list[str]]:
    """English rows' text (e.g. the writing requests in recipes/data) as sentence lists, for `synthetic_pairs`."""
    docs = []
    for row in rows:
        text = " ".join(str(row[field]).split())
        sentences = [s for s in _SENTENCE_END.split(text) if 6 <= len(s.split()) <= 60 and not has_cjk(s)]
        if sentences:
            docs.append(sentences)
    return docs


def synthetic_pairs(seed: int = 0, sentences_per_answer: int = 3,
                    prose: tuple[list[list[str]], list[str]] | None = None) -> list[PreferencePair]:
    """Coherent passages against repetitive, word-salad and cut-off versions (see the module doc); `prose`:
    (documents as sentence lists, prompts) instead of the packaged benchmark files'."""
    rng = random.Random(seed)
    docs, prompts = prose or _english_prose()
    pairs = []
    for sentences in docs:
        for start in range(0, len(sentences) - sentences_per_answer + 1, sentences_per_answer):
            window = sentences[start:start + sentences_per_answer]
            chosen = " ".join(window)
            prompt = rng.choice(prompts)
            repeated = " ".join([window[0]] * len(window))
            words = chosen.split()
            salad = words[:]
            while salad == words:
                rng.shuffle(salad)
            cut = " ".join(words[:rng.randint(len(words) // 3, 2 * len(words) // 3)]).rstrip(".!?,;:")
            pairs += [PreferencePair(prompt, chosen, repeated, "repeated"),
                      PreferencePair(prompt, chosen, " ".join(salad), "word_salad"),
                      PreferencePair(prompt, chosen, cut, "truncated")]
    return pairs
