"""Target word ranges for prompts that state a length, without an LLM (LongWriter-Zero's rules).

`stated_length(prompt)` finds the length a prompt asks for ("800 words", "no less than 2,000 words",
"300到400字", "两千字", "不超过500字", "每篇400字左右" with "五篇", ...) and `fast_range(prompt)` turns
it into the `[lo, hi]` range the paper's annotation rules give (`range_for`). Prompts that state no
length (or one this module cannot read with confidence) return None: annotate those with the LLM.

Units: English words and 词/单词 are words; 字 and Chinese "characters" are counted one per CJK
character (LongBench-Write's unit for Chinese, and `lwz.text.count_length`'s); "characters" asked of
an English text become words at `CHARS_PER_WORD`. Pages are ambiguous and left to the LLM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lwz.text import has_cjk

MAX_WORDS = 12000
MAX_WIDTH = 3000
STEP = 100
CHARS_PER_WORD = 6  # an English word plus its space, for "N characters" asked of English text

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_CN_NUM = "[零〇一二两三四五六七八九十百千万]+"
_NUM = rf"(?:\d{{1,3}}(?:,\d{{3}})+|\d+(?:\.\d+)?\s*[千万kK]?|{_CN_NUM})"
_UNIT = (r"(?:-|\s)?(?P<unit>words?\b|characters?\b|chars?\b|(?:个)?(?:汉)?字(?!母)|个?单词|个?词(?!语)|"
         r"english\s+words?\b)")
_COUNT = re.compile(rf"(?P<num>{_NUM})\s*{_UNIT}", re.IGNORECASE)
# "100至200字", "300到400字", "1000-1500 words", "between 1000 and 1500 words"
_RANGE = re.compile(rf"(?P<a>{_NUM})\s*(?:字|词|words?)?\s*(?:-|–|—|~|～|至|到|to|and)\s*(?P<b>{_NUM})\s*{_UNIT}",
                    re.IGNORECASE)
# "字数：1400左右", "字数要求：2000左右", "word count: 1500"
_LABELLED = re.compile(rf"(?:字数|篇幅|word\s*count|length)\s*(?:要求|在|为|是)?\s*[:：]?\s*(?P<num>{_NUM})(?!\s*{_UNIT})",
                       re.IGNORECASE)
_PARTS = re.compile(rf"(?:分|共|创作|写|write)?\s*(?P<num>\d+|[一二两三四五六七八九十]+)\s*"
                    r"(?P<what>篇|部分|章|节|段|幕|首|封|天|essays|stories|parts|chapters|sections|articles)",
                    re.IGNORECASE)
_PER_PART = re.compile(r"(?:各|每[篇章节段幕首封天个部分]*|each|per\s+\w+)\s*[^\n，。,.;；]{0,12}$", re.IGNORECASE)

_AT_LEAST = re.compile(r"(?<![a-z])(?:at\s+lea[st]{2}|no\s+less\s+than|not\s+less\s+than|no\s+fewer\s+than|more\s+than|"
                       r"over|minimum(?:\s+of)?|a\s+minimum\s+of|不少于|不低于|至少|最少|多于|超过)\s*$",
                       re.IGNORECASE)
_AT_LEAST_AFTER = re.compile(r"^\s*(?:以上|或以上|起|or\s+more|at\s+least|minimum|\+)", re.IGNORECASE)
_AT_MOST = re.compile(r"(?<![a-z])(?:no\s+more\s+than|not\s+more\s+than|not\s+exceed(?:ing)?|at\s+most|up\s+to|under|"
                      r"less\s+than|fewer\s+than|within|maximum(?:\s+of)?|不超过|不多于|最多|少于|控制在)\s*$",
                      re.IGNORECASE)
_AT_MOST_AFTER = re.compile(r"^\s*(?:以内|之内|以下|内|or\s+less|or\s+fewer|at\s+most|max(?:imum)?)", re.IGNORECASE)
_ABOUT = re.compile(r"(?<![a-z])(?:about|approximately|approx\.?|around|roughly|circa|~|约|大约|大概|大致)\s*$", re.IGNORECASE)
_ABOUT_AFTER = re.compile(r"^\s*(?:左右|上下)")


@dataclass(frozen=True)
class StatedLength:
    """A length found in a prompt: `kind` is exact, about, at_least, at_most or range (then lo..hi)."""

    kind: str
    value: int
    hi: int | None = None


def parse_number(text: str) -> int | None:
    """An integer from Arabic digits ("2,000", "1.5万", "3k") or Chinese numerals ("两千", "一万五千")."""
    text = text.strip().replace(",", "").replace(" ", "")
    if not text:
        return None
    scale = 1
    if text[-1] in "千kK" and text[:-1] and not re.fullmatch(_CN_NUM, text):
        scale, text = 1000, text[:-1]
    elif text[-1] == "万" and re.fullmatch(r"\d+(?:\.\d+)?万", text):
        scale, text = 10000, text[:-1]
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return int(round(float(text) * scale))
    if re.fullmatch(_CN_NUM, text):
        return _chinese_numeral(text)
    return None


def _chinese_numeral(text: str) -> int | None:
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch == "万":
            section += digit or 0
            total += (section or 1) * 10000
            section, digit = 0, None
        else:
            section += (1 if digit is None else digit) * _CN_UNITS[ch]
            digit = None
    value = total + section + (digit or 0)
    # "两千五" (2500): a trailing digit after a unit means the next lower unit
    if digit and len(text) >= 2 and text[-2] in "千百" and text[-1] in _CN_DIGITS:
        value += digit * (_CN_UNITS[text[-2]] // 10) - digit
    return value or None


def _in_words(value: int, unit: str, prompt: str) -> int:
    """Convert a count of `unit` to the reward's unit (words; CJK characters for Chinese text)."""
    unit = unit.lower()
    if unit.startswith(("char", "chars")) and not has_cjk(prompt):
        return max(1, round(value / CHARS_PER_WORD))
    return value


def _qualifier(before: str, after: str) -> str:
    """exact, about, at_least or at_most from the words around a count (the longest phrase wins:
    "no more than" over "more than", "不少于" over "少于")."""
    bounds = [(m.start(), kind) for kind, pattern in (("at_least", _AT_LEAST), ("at_most", _AT_MOST))
              if (m := pattern.search(before))]
    if bounds:
        return min(bounds)[1]
    if _AT_LEAST_AFTER.match(after):
        return "at_least"
    if _AT_MOST_AFTER.match(after):
        return "at_most"
    if _ABOUT.search(before) or _ABOUT_AFTER.match(after):
        return "about"
    return "exact"


def _parts_count(prompt: str) -> int | None:
    counts = [parse_number(m.group("num")) for m in _PARTS.finditer(prompt)]
    counts = [c for c in counts if c and 1 < c <= 50]
    return max(counts) if counts else None


def stated_length(prompt: str) -> StatedLength | None:
    """The length requirement stated in `prompt` (the largest when several are), or None."""
    found: list[StatedLength] = []
    spans: list[tuple[int, int]] = []
    for m in _RANGE.finditer(prompt):
        a, b = parse_number(m.group("a")), parse_number(m.group("b"))
        if a and b and a < b:
            unit = m.group("unit")
            found.append(StatedLength("range", _in_words(a, unit, prompt), _in_words(b, unit, prompt)))
            spans.append(m.span())
    for pattern in (_COUNT, _LABELLED):
        for m in pattern.finditer(prompt):
            if any(s <= m.start() < e for s, e in spans):
                continue
            value = parse_number(m.group("num"))
            if not value:
                continue
            unit = m.groupdict().get("unit") or "words"
            before, after = prompt[max(0, m.start() - 30):m.start()], prompt[m.end():m.end() + 12]
            value = _in_words(value, unit, prompt)
            if _PER_PART.search(before):
                parts = _parts_count(prompt)
                if parts is None:
                    return None  # "each part N words" without a part count: ask the LLM
                value *= parts
            found.append(StatedLength(_qualifier(before, after), value))
            spans.append(m.span())
    if not found:
        return None
    return max(found, key=lambda s: s.hi or s.value)


def _down(x: float) -> int:
    return int(x // STEP) * STEP


def _up(x: float) -> int:
    return int(-(-x // STEP)) * STEP


def _nearest(x: float) -> int:
    return int((x + STEP / 2) // STEP) * STEP


def enforce_rules(lo: int, hi: int) -> tuple[int, int]:
    """Apply the annotation rules: multiples of 100, lo <= hi <= 12000, hi - lo <= 3000; [0, 0] stays.

    A range starting above 12000 words is impossible: [0, 0].
    """
    lo, hi = min(lo, hi), max(lo, hi)
    if hi <= 0 or lo > MAX_WORDS:
        return 0, 0
    lo, hi = max(0, _down(lo)), _up(hi)
    hi = min(hi, MAX_WORDS)
    if hi == lo:  # leave room: a one-value range is met by luck only
        lo, hi = (lo, hi + STEP) if hi + STEP <= MAX_WORDS else (lo - STEP, hi)
    if hi - lo > MAX_WIDTH:
        lo = hi - MAX_WIDTH
    return lo, hi


def range_for(stated: StatedLength) -> tuple[int, int]:
    """The paper's range for a stated length: +-10% of explicit counts, ranges kept, > 12000 -> [0, 0]."""
    n = stated.value
    if stated.kind in ("exact", "about", "at_least") and n > MAX_WORDS:
        return 0, 0
    if stated.kind == "range":
        return enforce_rules(n, stated.hi)
    if stated.kind == "at_least":
        lo = _down(n)
        return enforce_rules(lo, max(_up(n * 11 / 10), lo + STEP))
    if stated.kind == "at_most":
        hi = _down(n) if n >= STEP else STEP
        return enforce_rules(max(0, min(_down(n * 9 / 10), hi - STEP)), hi)
    lo, hi = _nearest(n * 9 / 10), _nearest(n * 11 / 10)
    lo, hi = min(lo, _down(n)), max(hi, _up(n))
    return enforce_rules(lo, hi if hi > lo else lo + STEP)


def fast_range(prompt: str) -> tuple[int, int] | None:
    """`[lo, hi]` for a prompt that states its length, else None (annotate it with the LLM)."""
    stated = stated_length(prompt)
    return None if stated is None else range_for(stated)
