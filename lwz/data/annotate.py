"""Length-range annotation of prompts (`lwz annotate-lengths`): the paper's step 2.

Each prompt gets a target word range `[lo, hi]` under LongWriter-Zero's rules: from the fast path
(`lwz.data.length_fast_path`) when it states a length, else from an LLM served by vLLM, whose answer
is parsed leniently and then forced to obey the rules (`enforce_rules`).

With `keep_given`, a row that already carries a valid `length_range` (set by hand or by a rule of the
data's author) keeps it, with its own `length_range_source` or "given".

Files: OUT (JSONL) holds each done input row plus `length_range` and `length_range_source`
("fast", "llm", or the given source); `OUT.errors.jsonl` holds the rows that failed in the latest run (bad JSON, missing
field, an LLM answer with no range, a prompt too long for the model), with the reason.
Both are appended per batch with flush + fsync, so a crash loses at most the batch in flight; a torn
last line of OUT is cut on the next run. Re-running skips the rows already in OUT (matched by a hash
of the prompt, counted, so repeated prompts are each kept) and retries the rows that failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lwz.data.length_fast_path import MAX_WIDTH, MAX_WORDS, enforce_rules, fast_range
from lwz.errors import LwzError
from lwz.jsonl import text_lines

log = logging.getLogger(__name__)

RANGE_KEY = "length_range"
SOURCE_KEY = "length_range_source"

ANNOTATION_PROMPT = """You estimate how long the answer to a writing request should be.
Give a target length range [lo, hi] in words (for Chinese requests count one word per Chinese character).
Rules:
1. lo and hi are multiples of 100 and hi <= {max_words}.
2. hi - lo <= {max_width}.
3. An explicit requirement gets a range of about +-10%: "no more than 2000 words" -> [1800, 2000];
   "at least 2000 words" -> [2000, 2200]; "about 1000 words" -> [900, 1100]; a stated range such as
   "1000-1500 words" is kept as [1000, 1500].
4. Without a stated length, choose what a good answer to this kind of request needs.
5. If the request is impossible or needs more than {max_words} words, answer [0, 0].
Answer with the range only, in the form [lo, hi].

Request:
{prompt}"""

_THINK_END = "</think>"
_INT = r"\d{1,3}(?:,\d{3})+|\d+"
_BRACKETS = re.compile(rf"[\[(（【]\s*({_INT})\s*[,，、]\s*({_INT})\s*[\])）】]")
_DASHED = re.compile(rf"(?<![\d,])({_INT})\s*(?:-|–|—|~|～|to|至|到)\s*({_INT})(?![\d,])")
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")


def prompt_hash(prompt: str) -> str:
    """The key that marks a prompt as done (sha256 of its UTF-8 text, 16 hex digits)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def annotation_prompt(prompt: str) -> str:
    """The instruction given to the annotating LLM for one user request."""
    return ANNOTATION_PROMPT.format(prompt=prompt, max_words=MAX_WORDS, max_width=MAX_WIDTH)


def parse_range_answer(answer: str) -> tuple[int, int] | None:
    """`[lo, hi]` from an LLM's answer (after any `</think>`), obeying the rules; None if there is none.

    Accepts "[1200, 1800]", JSON ({"lo": .., "hi": ..}, {"range": [..]}, {"length_range": [..]}) and
    "1200-1800" / "1200 to 1800", with text around it; the last range stated wins.
    """
    text = answer.rsplit(_THINK_END, 1)[-1]
    found = _json_range(text) or _last_pair(_BRACKETS, text) or _last_pair(_DASHED, text)
    return None if found is None else enforce_rules(*found)


def _json_range(text: str) -> tuple[int, int] | None:
    for raw in reversed(_JSON_OBJECT.findall(text)):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue
        for lo_key, hi_key in (("lo", "hi"), ("min", "max"), ("low", "high")):
            if _is_int(obj.get(lo_key)) and _is_int(obj.get(hi_key)):
                return int(obj[lo_key]), int(obj[hi_key])
        for key in ("range", RANGE_KEY):
            pair = obj.get(key)
            if isinstance(pair, list) and len(pair) == 2 and all(_is_int(v) for v in pair):
                return int(pair[0]), int(pair[1])
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()


def _last_pair(pattern: re.Pattern, text: str) -> tuple[int, int] | None:
    matches = pattern.findall(text)
    if not matches:
        return None
    lo, hi = matches[-1]
    return int(lo.replace(",", "")), int(hi.replace(",", ""))


@dataclass
class AnnotationSummary:
    """What one run did."""

    done_before: int = 0
    fast: int = 0
    llm: int = 0
    given: int = 0
    errors: int = 0
    error_reasons: Counter = field(default_factory=Counter)

    @property
    def annotated(self) -> int:
        """Rows annotated in this run."""
        return self.fast + self.llm + self.given


@dataclass
class _Row:
    line: int
    raw: str
    data: dict[str, Any] | None = None
    prompt: str | None = None
    error: str | None = None


def errors_path(out: str | os.PathLike) -> Path:
    """Where the failed rows of `out` go: `OUT.errors.jsonl`."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".errors.jsonl")


def annotate_file(data: str | os.PathLike, out: str | os.PathLike, *, model: str | None = None,
                  field_name: str = "prompt", batch_size: int = 32, use_fast_path: bool = True,
                  max_tokens: int = 512, max_model_len: int | None = None, keep_given: bool = False
                  ) -> AnnotationSummary:
    """Annotate the prompts of JSONL `data` into `out` (see the module docstring); returns the counts.

    Without `model`, prompts that state no length are reported as errors.
    """
    data, out = Path(data), Path(out)
    if not data.is_file():
        raise LwzError(str(data), None, "no such file")
    if batch_size < 1:
        raise LwzError(None, "--batch-size", f"{batch_size} is invalid: need >= 1")
    summary = AnnotationSummary()
    done = _done_hashes(out, field_name)
    summary.done_before = sum(done.values())
    rows = list(_pending_rows(data, field_name, done))
    err_file = errors_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    err_file.unlink(missing_ok=True)  # failed rows are retried; this run reports its own
    annotator = None
    with open(out, "a", encoding="utf-8") as out_f, open(err_file, "a", encoding="utf-8") as err_f:
        for start in tqdm(range(0, len(rows), batch_size), desc="annotate", unit="batch", disable=not rows):
            batch = rows[start:start + batch_size]
            ranges: dict[int, tuple[tuple[int, int], str]] = {}
            answers: dict[int, str] = {}
            for i, row in enumerate(batch):
                if row.error is None and keep_given and (given := _given_range(row.data)) is not None:
                    ranges[i] = (given, row.data.get(SOURCE_KEY) or "given")
                elif row.error is None and use_fast_path and (found := fast_range(row.prompt)) is not None:
                    ranges[i] = (found, "fast")
            need_llm = [i for i, row in enumerate(batch) if row.error is None and i not in ranges]
            if need_llm and model is None:
                for i in need_llm:
                    batch[i].error = "no stated length and no --model to ask"
            elif need_llm:
                annotator = annotator or LlmAnnotator(model, max_tokens=max_tokens, max_model_len=max_model_len)
                for i, result in zip(need_llm, annotator.annotate([batch[i].prompt for i in need_llm])):
                    if isinstance(result, tuple):
                        ranges[i] = (result, "llm")
                    else:
                        batch[i].error, answers[i] = result.error, result.answer
            good, bad = [], []
            for i, row in enumerate(batch):
                if i in ranges:
                    (lo, hi), source = ranges[i]
                    good.append({**row.data, RANGE_KEY: [lo, hi], SOURCE_KEY: source})
                    summary.fast += source == "fast"
                    summary.llm += source == "llm"
                    summary.given += source not in ("fast", "llm")
                else:
                    bad.append(_error_record(row, answers.get(i)))
                    summary.errors += 1
                    summary.error_reasons[row.error.split(":")[0]] += 1
            _append(out_f, good)
            _append(err_f, bad)
    if summary.errors:
        log.warning("%d of %d rows failed; see %s", summary.errors, len(rows), err_file)
    else:
        err_file.unlink(missing_ok=True)
    return summary


def _given_range(data: dict[str, Any]) -> tuple[int, int] | None:
    """The row's own [lo, hi] when it is a valid range (integers, 0 <= lo <= hi, lo = 0 only as [0, 0])."""
    from lwz.rewards.length import check_range

    if data.get(RANGE_KEY) is None:
        return None
    try:
        lo, hi = check_range(data[RANGE_KEY])
    except LwzError:
        return None
    return None if lo == 0 < hi else (lo, hi)


def _error_record(row: _Row, answer: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"line": row.line, "error": row.error}
    if row.prompt is not None:
        record["prompt_hash"] = prompt_hash(row.prompt)
    if answer is not None:
        record["answer"] = answer
    record["row"] = row.data if row.data is not None else row.raw
    return record


def _append(f, records: Sequence[dict[str, Any]]) -> None:
    if not records:
        return
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    f.flush()
    os.fsync(f.fileno())


def _done_hashes(out: Path, field_name: str) -> Counter:
    """Prompt hashes already in OUT (with multiplicity); cuts a torn last line left by a crash."""
    done: Counter = Counter()
    if not out.exists():
        return done
    raw = out.read_bytes()
    lines = raw.split(b"\n")
    if lines[-1].strip():  # no final newline: the last write was cut short
        log.warning("%s: dropping a torn last line (an interrupted write)", out)
        with open(out, "r+b") as f:
            f.truncate(len(raw) - len(lines[-1]))
            os.fsync(f.fileno())
    for n, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if RANGE_KEY not in row:
                raise KeyError(RANGE_KEY)
            done[prompt_hash(row[field_name])] += 1
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise LwzError(str(out), f"line {n}", f"not an annotated row ({type(e).__name__}: {e}); "
                           "fix or remove the file") from None
    return done


def _pending_rows(data: Path, field_name: str, done: Counter) -> Iterator[_Row]:
    """The rows still to annotate; a row without the field at all fails the whole file (a wrong --field)."""
    for n, raw in text_lines(data):
        row = _Row(line=n, raw=raw)
        try:
            row.data = json.loads(raw)
        except json.JSONDecodeError as e:
            row.error = f"invalid JSON: {e.msg}"
            yield row
            continue
        if not isinstance(row.data, dict):
            row.error, row.data = "invalid row: not a JSON object", None
        elif field_name not in row.data:
            fields = ", ".join(map(repr, row.data)) or "none"
            raise LwzError(f"{data}:{n}", "--field", f"the row has no field {field_name!r} (its fields: {fields}); "
                           "name the field that holds the request with --field")
        elif not isinstance(row.data[field_name], str) or not row.data[field_name].strip():
            row.error = f"missing field: no text in {field_name!r}"
        else:
            row.prompt = row.data[field_name]
            key = prompt_hash(row.prompt)
            if done[key] > 0:
                done[key] -= 1
                continue
        yield row


@dataclass
class LlmFailure:
    """Why the LLM gave no range for a prompt."""

    error: str
    answer: str | None = None


class LlmAnnotator:
    """Asks an LLM (vLLM, greedy) for each prompt's range."""

    def __init__(self, model: str, *, max_tokens: int = 512, max_model_len: int | None = None):
        from lwz.engines.vllm_engine import SamplingSettings, VllmEngine
        from lwz.runtime.device import engine_device

        path = Path(model)
        if not (path / "config.json").is_file():
            raise LwzError(model, "--model", "not a model folder (no config.json)")
        limit = json.loads((path / "config.json").read_text()).get("max_position_embeddings", 8192)
        self.max_model_len = max_model_len or min(int(limit), 8192)
        self.max_tokens = max_tokens
        device = engine_device()
        self.engine = VllmEngine(str(path), device=device, dtype="bf16" if device == "gpu" else "fp32",
                                 max_model_len=self.max_model_len)
        self.sampling = SamplingSettings(group_size=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens)

    def _chat(self, prompt: str) -> str:
        tokenizer = self.engine.tokenizer
        message = [{"role": "user", "content": annotation_prompt(prompt)}]
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
        return message[0]["content"] + "\n"

    def annotate(self, prompts: Sequence[str]) -> list[tuple[int, int] | LlmFailure]:
        """A range, or why there is none, for each prompt (in order)."""
        texts = [self._chat(p) for p in prompts]
        budget = self.max_model_len - self.max_tokens
        fits = [len(self.engine.tokenizer(t, add_special_tokens=False)["input_ids"]) <= budget for t in texts]
        results: list[tuple[int, int] | LlmFailure] = [
            LlmFailure(f"prompt too long: over {budget} tokens with the instructions") for _ in prompts]
        todo = [i for i, ok in enumerate(fits) if ok]
        completions = self.engine.generate([texts[i] for i in todo], self.sampling) if todo else []
        for i, group in zip(todo, completions):
            answer = group[0].text
            parsed = parse_range_answer(answer)
            results[i] = parsed if parsed is not None else LlmFailure("unparseable answer: no [lo, hi] range", answer)
        return results
