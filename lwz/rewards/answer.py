"""Finding the `<think>` and `<answer>` segments of a response.

A rollout that stops generation on the stop string `</answer>` keeps it in the text (the engines generate with
`include_stop_str_in_output`), so a response is parsed as it is.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def _segment(text: str, open_tag: str, close_tag: str, start: int = 0) -> tuple[str, int] | None:
    """Content of the first `open_tag ... close_tag` at or after `start`, and the index past it."""
    begin = text.find(open_tag, start)
    if begin < 0:
        return None
    end = text.find(close_tag, begin + len(open_tag))
    if end < 0:
        return None
    return text[begin + len(open_tag):end], end + len(close_tag)


def split_think_answer(response: str) -> tuple[str | None, str | None]:
    """Leniently find (think, answer), each stripped, None where absent.

    think: inside the first `<think>...</think>`. answer: inside the first `<answer>...</answer>`
    after that think segment (a plan may mention the tags), or anywhere when there is none.
    Well-formedness is judged by `lwz.rewards.format.is_well_formed`, not here.
    """
    think = _segment(response, THINK_OPEN, THINK_CLOSE)
    answer = _segment(response, ANSWER_OPEN, ANSWER_CLOSE, think[1] if think else 0)
    return (think[0].strip() if think else None), (answer[0].strip() if answer else None)


def extract_answer(response: str) -> str | None:
    """The answer text (see `split_think_answer`), or None when the response has no answer segment."""
    return split_think_answer(response)[1]
