"""Robust parsing of LLM-judge outputs: WritingBench critic scores and pairwise verdicts.

Critic scores (`parse_critic_score`), decisions:
- Text before the first `</think>` is dropped (a reasoning judge), as WritingBench's own parser does.
- The first JSON object with a `score` key wins, searched in fenced ```json blocks, then the whole
  text; Python-style objects (single quotes) are accepted. Keys match case-insensitively.
- If no object parses (e.g. a truncated reason string), a `"score": N` / `Score: N/10` pattern is used.
- A score may be a number or a string: "8", "8.5", "8/10", "8 out of 10". Denominators other than
  10 are rejected as ambiguous.
- Non-integer scores are kept as they are (not rounded): they average like any other score.
- Scores outside 1-10 are rejected, not clipped: a judge that says 11 or 0 did not follow the
  rubric, and clipping would hide that.
- A missing or unusable score gives `score=None` with `failure` saying why; never a silent 0.

Pairwise verdicts (`parse_verdict`): the last `[[A]]`, `[[B]]`, `[[C]]` (or `[[tie]]`) in the text
after any `</think>`; brackets may carry spaces or lower case. No marker gives None.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

SCORE_MIN, SCORE_MAX = 1.0, 10.0
THINK_CLOSE = "</think>"

_FENCED = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_SCORE_FIELD = re.compile(
    r"""["']?score["']?\s*[:=]\s*["']?\s*(\d+(?:\.\d+)?(?:\s*(?:/|out\s+of)\s*\d+(?:\.\d+)?)?)""", re.IGNORECASE
)
_SCORE_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?\s*$", re.IGNORECASE)
_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)


@dataclass(frozen=True)
class CriticScore:
    """A parsed critic output: `score` (None when unusable), the judge's `reason`, and `failure` (why None)."""

    score: float | None
    reason: str | None = None
    failure: str | None = None


def after_think(text: str) -> str:
    """The text after the first `</think>`, or all of it when there is none."""
    _, marker, tail = text.partition(THINK_CLOSE)
    return tail if marker else text


def parse_critic_score(text: str) -> CriticScore:
    """Parse one critic output into a 1-10 score, or None with the failure (see the module notes)."""
    if not isinstance(text, str) or not text.strip():
        return CriticScore(None, failure="empty judge output")
    body = after_think(text)
    obj = _first_score_object(body)
    if obj is not None:
        key = next(k for k in obj if isinstance(k, str) and k.lower() == "score")
        reason_key = next((k for k in obj if isinstance(k, str) and k.lower() == "reason"), None)
        reason = obj[reason_key] if reason_key is not None and isinstance(obj[reason_key], str) else None
        return _checked(obj[key], reason)
    match = _SCORE_FIELD.search(body)
    if match is None:
        return CriticScore(None, failure="no JSON object with a 'score' key and no 'score: N' in the output")
    return _checked(match.group(1), None)


def _checked(raw: Any, reason: str | None) -> CriticScore:
    """Turn a raw score value into a CriticScore, rejecting non-numbers and out-of-range values."""
    value, failure = _as_number(raw)
    if value is None:
        return CriticScore(None, reason, failure)
    if not SCORE_MIN <= value <= SCORE_MAX:
        return CriticScore(None, reason, f"score {value:g} outside {SCORE_MIN:g}-{SCORE_MAX:g}")
    return CriticScore(value, reason)


def _as_number(raw: Any) -> tuple[float | None, str | None]:
    """(value, None) for a usable score, else (None, failure)."""
    if isinstance(raw, bool):
        return None, f"score {raw!r} is not a number"
    if isinstance(raw, int | float):
        return float(raw), None
    if isinstance(raw, str):
        match = _SCORE_TEXT.match(raw)
        if match is None:
            return None, f"score {raw!r} is not a number"
        denominator = match.group(2)
        if denominator is not None and float(denominator) != SCORE_MAX:
            return None, f"score {raw!r} is not on a 1-{SCORE_MAX:g} scale"
        return float(match.group(1)), None
    return None, f"score {raw!r} is not a number"


def _first_score_object(text: str) -> dict | None:
    """The first dict with a `score` key in fenced blocks, then anywhere in `text`; None if none parses."""
    for candidate in [*_FENCED.findall(text), text]:
        obj = _find_object(candidate)
        if obj is not None:
            return obj
    return None


def _find_object(text: str) -> dict | None:
    """Scan `text` for `{` and return the first JSON or Python-literal dict that has a `score` key."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        obj = _decode_at(decoder, text, start)
        if isinstance(obj, dict) and any(isinstance(k, str) and k.lower() == "score" for k in obj):
            return obj
        start = text.find("{", start + 1)
    return None


def _decode_at(decoder: json.JSONDecoder, text: str, start: int) -> Any:
    """A JSON value at `start`, else a Python literal ending at one of the next `}`; None if neither."""
    try:
        return decoder.raw_decode(text, start)[0]
    except json.JSONDecodeError:
        pass
    end = text.find("}", start)
    while end >= 0:
        try:
            return ast.literal_eval(text[start:end + 1])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            end = text.find("}", end + 1)
    return None


def parse_verdict(text: str) -> str | None:
    """The pairwise verdict: 'a', 'b' or 'tie' from the last `[[A]]`/`[[B]]`/`[[C]]`; None if absent."""
    if not isinstance(text, str):
        return None
    found = _VERDICT.findall(after_think(text))
    if not found:
        return None
    last = found[-1].lower()
    return {"a": "a", "b": "b", "c": "tie", "tie": "tie"}[last]
