"""Prompt templates (package data `lwz/assets/templates/`): think-then-answer, answer directly, or raw.

`raw` sends the request as it is (no instructions, no tags): for models with their own prompting and
for cheap tests. With a chat tokenizer (`rollout.chat_template`, for instruct models) the prompt is
the tokenizer's chat: the template's instructions (the text before its user marker) as the system
turn, the request as the user turn, then the assistant's turn opened.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from lwz.errors import LwzError, did_you_mean
from lwz.text import has_cjk

TEMPLATES = ("think", "nothink", "raw")
QUESTION_SLOT = "{question}"
USER_MARKERS = ("<|user|>:", "<|用户|>:")


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


def render_prompt(question: str, template: str = "think", chat_tokenizer: Any = None) -> str:
    """The prompt for `question`: the Chinese template when it contains CJK characters, else English;
    through `chat_tokenizer`'s chat template when one is given."""
    if chat_tokenizer is not None:
        messages = [] if template == "raw" else [{"role": "system", "content": instructions(template, question)}]
        messages.append({"role": "user", "content": question})
        return chat_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if template == "raw":
        return question
    return load_template(template, "zh" if has_cjk(question) else "en").replace(QUESTION_SLOT, question)


def instructions(template: str, question: str) -> str:
    """The template's instructions for `question`'s language: its text before the user marker."""
    text = load_template(template, "zh" if has_cjk(question) else "en")
    cut = min(text.index(m) for m in USER_MARKERS if m in text)
    return text[:cut].strip()
