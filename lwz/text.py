"""Text measures shared by rewards and evaluation (LongBench-Write conventions)."""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u4e00-\u9fff]")
_EN_WORD = re.compile(r"\b[a-zA-Z]+\b")


def has_cjk(text: str) -> bool:
    """True when `text` contains a CJK unified ideograph (U+4E00-U+9FFF)."""
    return _CJK.search(text) is not None


def count_length(text: str) -> int:
    """LongBench-Write length: CJK characters plus English words (`\\b[a-zA-Z]+\\b`)."""
    return len(_CJK.findall(text)) + len(_EN_WORD.findall(text))
