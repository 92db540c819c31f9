"""Prompt templates (package data `lwz/assets/templates/`): think-then-answer, answer directly, or raw.

`raw` sends the request as it is (no instructions, no tags): for models with their own prompting and
for cheap tests.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lwz.errors import LwzError, did_you_mean
from lwz.text import has_cjk

TEMPLATES = ("think", "nothink", "raw")
QUESTION_SLOT = "{question}"


@lru_cache(maxsize=None)
def load_template(template: str, language: str) -> str:
    """The raw text of `template` ("think" | "nothink") in `language` ("en" | "zh")."""
    if template not in TEMPLATES:
        raise LwzError(None, "rollout.template", f"unknown template {template!r}; allowed: "
                       f"{', '.join(TEMPLATES)}" + did_you_mean(template, TEMPLATES))
    assert language in ("en", "zh"), f"language must be en or zh, not {language!r}"
    text = (resources.files("lwz") / "assets" / "templates" / f"{template}_{language}.txt").read_text("utf-8")
    assert text.count(QUESTION_SLOT) == 1, f"template {template}_{language} must have one {QUESTION_SLOT} slot"
    return text


def render_prompt(question: str, template: str = "think") -> str:
    """The prompt for `question`: the Chinese template when it contains CJK characters, else English."""
    if template == "raw":
        return question
    return load_template(template, "zh" if has_cjk(question) else "en").replace(QUESTION_SLOT, question)
