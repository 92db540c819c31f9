"""Training prompts: loading (HF datasets, local files) and an epoch-aware, resumable order."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from lwz.data.rows import read_rows
from lwz.errors import LwzError
from lwz.recipe.schema import Recipe
from lwz.rewards.length import LENGTH_RANGE_KEY, check_range

log = logging.getLogger(__name__)


def load_prompts(files: Sequence[str], *, prompt_field: str = "prompt", range_field: str = "length_range",
                 limit: int | None = None, l_max: int | None = None, max_target: int | None = None,
                 min_target: int | None = None, languages: Sequence[str] = ()) -> list[dict]:
    """Rows with `prompt` and `length_range` (copied from the recipe's fields), other fields kept.

    Every row is checked (LwzError naming the file and line): a non-empty prompt, a [lo, hi] range of
    integers with 0 <= lo <= hi, lo = 0 only as [0, 0] (no length target), and hi below the length
    reward's `l_max` when one is given. Left out after the checks: with `max_target` rows whose hi exceeds
    it, with `min_target` rows whose lo is below it, with `languages` rows whose `lang` is not one of them
    (a row without `lang` is an error then). JSONL/JSON files are read line by line, parquet and CSV with HF `datasets`.
    """
    if not files:
        raise LwzError(None, "data.prompts", "no prompt files given")
    rows: list[dict] = []
    for file in files:
        for where, row in read_rows(str(file), "data.prompts"):
            normalised = _normalise(row, where, prompt_field, range_field)
            lo, hi = normalised[LENGTH_RANGE_KEY]
            if languages and row.get("lang") is None:
                raise LwzError(where, "lang", "missing: data.languages filters on it")
            if (max_target is not None and hi > max_target) or (min_target is not None and lo < min_target) \
                    or (languages and row["lang"] not in languages):
                continue
            if l_max is not None and hi >= l_max:
                raise LwzError(where, range_field, f"{normalised[LENGTH_RANGE_KEY]}: hi must be below the length "
                               f"reward's l_max = {l_max}")
            rows.append(normalised)
    if not rows:
        if max_target is not None or min_target is not None or languages:
            key = "data.max_target" if max_target is not None else "data.min_target" if min_target is not None \
                else "data.languages"
            raise LwzError(", ".join(map(str, files)), key, f"no prompt has a target within [{min_target or 0}, "
                           f"{max_target or 'any'}] words" + (f" in {', '.join(languages)}" if languages else ""))
        raise LwzError(", ".join(map(str, files)), "data.prompts", "the prompt files hold no prompts")
    return rows[:limit] if limit else rows


def recipe_prompts(recipe: Recipe) -> list[dict]:
    """The recipe's training prompts (`data`), checked against its length reward's `l_max`."""
    data = recipe.data
    l_max = next((t.params["l_max"] for t in recipe.rewards.terms if t.name == "length"), None)
    return load_prompts(data.prompts, prompt_field=data.prompt_field, range_field=data.range_field,
                        limit=data.limit, l_max=l_max, max_target=data.max_target, min_target=data.min_target,
                        languages=data.languages)


def _normalise(row: dict, where: str, prompt_field: str, range_field: str) -> dict:
    prompt = row.get(prompt_field)
    if not isinstance(prompt, str) or not prompt.strip():
        raise LwzError(where, prompt_field, "missing or empty prompt (set data.prompt_field)")
    out = dict(row)
    out["prompt"] = prompt
    if row.get(range_field) is None:
        raise LwzError(where, range_field, "missing length range [lo, hi] (annotate with `lwz annotate-lengths` "
                       "or set data.range_field)")
    try:
        lo, hi = check_range(row[range_field])
    except LwzError as e:
        raise LwzError(where, range_field, e.message) from None
    if lo == 0 and hi > 0:
        raise LwzError(where, range_field, f"[0, {hi}]: lo = 0 is only for [0, 0] (a request with no length target)")
    out[LENGTH_RANGE_KEY] = [lo, hi]
    return out


def fitting_prompts(rows: list[dict], tokenizer, template: str, max_prompt_tokens: int, chat: bool = False) -> list[dict]:
    """The rows whose templated prompt (through the tokenizer's chat template when `chat`) fits
    `max_prompt_tokens` (the engine's context is sized for it); the others are dropped with one warning
    that counts them."""
    from lwz.data.templates import render_prompt

    def tokens(row: dict) -> int:
        return len(tokenizer.encode(render_prompt(row["prompt"], template, tokenizer if chat else None)))

    kept = [row for row in rows if tokens(row) <= max_prompt_tokens]
    if len(kept) < len(rows):
        log.warning("dropped %d of %d prompts longer than rollout.max_prompt_tokens=%d after the %s template",
                    len(rows) - len(kept), len(rows), max_prompt_tokens, template)
    if not kept:
        raise LwzError(None, "rollout.max_prompt_tokens", f"{max_prompt_tokens} tokens fit none of the "
                       f"{len(rows)} prompts; raise it")
    return kept


class PromptOrder:
    """Which prompts each step sees: a seeded permutation per epoch, a pure function of the step."""

    def __init__(self, num_prompts: int, per_step: int, seed: int, shuffle: bool = True):
        if num_prompts < 1:
            raise LwzError(None, "data.prompts", "the prompt files hold no prompts")
        self.num_prompts, self.per_step, self.seed, self.shuffle = num_prompts, per_step, seed, shuffle

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_prompts)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_prompts)

    def indices(self, step: int) -> list[int]:
        """Prompt indices of `step` (0-based); consecutive steps walk through epochs without repeats."""
        start = step * self.per_step
        return [self.at(position) for position in range(start, start + self.per_step)]

    def at(self, position: int) -> int:
        """The prompt index at `position` of the stream (epoch after epoch)."""
        epoch, offset = divmod(position, self.num_prompts)
        return int(self._permutation(epoch)[offset])

    def epoch(self, step: int) -> int:
        """The epoch the first prompt of `step` belongs to."""
        return step * self.per_step // self.num_prompts
