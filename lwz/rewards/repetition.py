"""Repetition measures of a text: n-gram repetition rate and near-duplicate paragraph ratio.

Texts are cut into units much as LongBench-Write counts length: each CJK character is one unit,
every other run of letters or digits (any script) is one lower-cased word. A text is measured in
CJK characters when they outnumber its words, else in words, so one setting fits both languages.
"""

from __future__ import annotations

import re
from collections import Counter

DEFAULT_NGRAM = 4
DEFAULT_NGRAM_CJK = 8
DEFAULT_PARAGRAPH_SIMILARITY = 0.5
DEFAULT_MIN_PARAGRAPH_UNITS = 10

_CJK_CHAR = r"[\u4e00-\u9fff]"
_UNIT = re.compile(rf"{_CJK_CHAR}|[^\W_\u4e00-\u9fff]+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*")


def text_units(text: str) -> list[str]:
    """The text's units: single CJK characters and lower-cased words (letters or digits)."""
    return _UNIT.findall(text.lower())


def ngram_size(units: list[str], ngram: int = DEFAULT_NGRAM, ngram_cjk: int = DEFAULT_NGRAM_CJK) -> int:
    """`ngram_cjk` when CJK characters outnumber words among `units`, else `ngram`."""
    cjk = sum(1 for u in units if len(u) == 1 and "\u4e00" <= u <= "\u9fff")
    return ngram_cjk if cjk > len(units) - cjk else ngram


def _ngrams(units: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(units[i:] for i in range(n))))


def ngram_repetition_rate(text: str, *, ngram: int = DEFAULT_NGRAM, ngram_cjk: int = DEFAULT_NGRAM_CJK) -> float:
    """Fraction of the text's n-grams that repeat an earlier one: 1 - distinct / total.

    0.0 for a text shorter than n units; approaches 1.0 for a text that repeats one passage.
    """
    assert ngram >= 1 and ngram_cjk >= 1, "n-gram sizes must be >= 1"
    units = text_units(text)
    grams = _ngrams(units, ngram_size(units, ngram, ngram_cjk))
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def split_paragraphs(text: str) -> list[str]:
    """Non-blank paragraphs, split at line breaks (LLM answers use single or blank lines)."""
    return [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]


def duplicate_paragraph_ratio(
    text: str,
    *,
    paragraph_similarity: float = DEFAULT_PARAGRAPH_SIMILARITY,
    min_paragraph_units: int = DEFAULT_MIN_PARAGRAPH_UNITS,
    ngram: int = DEFAULT_NGRAM,
    ngram_cjk: int = DEFAULT_NGRAM_CJK,
) -> float:
    """Fraction of paragraphs that nearly duplicate an earlier paragraph.

    Paragraphs with fewer than `min_paragraph_units` units (headings, short list items) are left
    out. Each paragraph is a set of n-gram shingles (n as in `ngram_repetition_rate`); a paragraph
    is a near-duplicate when its shingles' Jaccard similarity with an earlier paragraph's is at
    least `paragraph_similarity`. 0.0 when fewer than two paragraphs count.
    """
    assert 0.0 < paragraph_similarity <= 1.0, "paragraph_similarity must lie in (0, 1]"
    paragraphs = [text_units(p) for p in split_paragraphs(text)]
    n = ngram_size([u for units in paragraphs for u in units], ngram, ngram_cjk)
    shingles = [set(_ngrams(units, n)) or {tuple(units)} for units in paragraphs if len(units) >= min_paragraph_units]
    if len(shingles) < 2:
        return 0.0
    postings: dict[tuple[str, ...], list[int]] = {}
    duplicates = 0
    for i, current in enumerate(shingles):
        shared = Counter(j for s in current for j in postings.get(s, ()))
        if any(common / (len(current) + len(shingles[j]) - common) >= paragraph_similarity
               for j, common in shared.items()):
            duplicates += 1
        for s in current:
            postings.setdefault(s, []).append(i)
    return duplicates / len(shingles)
