"""WritingBench scoring: one critic prompt per (query, criterion, response), then mean scores.

Prompts follow X-PLUG/WritingBench `evaluate_benchmark.py`: the system line and the per-criterion
template from the benchmark's own files; the criterion is inserted as WritingBench inserts it (the
Python `str()` of the checklist item), and text up to the first `</think>` (and the whitespace after
it) is stripped from the response first. Aggregation: a query's score is the mean over its parsed
criteria, a domain's the mean over its queries (`domain1`), the overall score the mean over queries.
Criteria whose judge output did not parse are left out and counted; queries with none parsed are
left out and listed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lwz.errors import LwzError
from lwz.jsonl import read_objects
from lwz.eval import benchmark_file
from lwz.eval.critic_parse import after_think, parse_critic_score

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class CriticPrompts:
    """The critic's system line and its `str.format` template (`{criteria}`, `{query}`, `{response}`)."""

    system: str
    template: str


def load_critic_prompts(folder: str | os.PathLike | None = None) -> CriticPrompts:
    """Read `writingbench_critic_system.txt` and `writingbench_critic_prompt.txt` (default: shipped ones)."""
    def read(name: str) -> str:
        return (Path(folder) / name if folder else benchmark_file(name)).read_text("utf-8")

    return CriticPrompts(read("writingbench_critic_system.txt"), read("writingbench_critic_prompt.txt"))


def critic_messages(prompts: CriticPrompts, query: str, criterion: Mapping[str, Any], response: str) -> Messages:
    """Chat messages asking the critic to score `response` to `query` against one checklist `criterion`."""
    user = prompts.template.format(criteria=str(dict(criterion)), query=query, response=after_think(response).lstrip())
    return [{"role": "system", "content": prompts.system}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class CriticRequest:
    """One critic call: which query (`index`, `domain1`) and criterion it scores, and its messages."""

    index: int | str
    domain1: str
    criterion: str
    messages: Messages


def critic_requests(
    rows: Sequence[Mapping[str, Any]], responses: Mapping[int | str, str], prompts: CriticPrompts
) -> list[CriticRequest]:
    """Critic calls for every benchmark row that has a response (keyed by the row's `index`)."""
    requests = []
    for row in rows:
        if row["index"] not in responses:
            continue
        for criterion in row["checklist"]:
            messages = critic_messages(prompts, row["query"], criterion, responses[row["index"]])
            requests.append(CriticRequest(row["index"], row["domain1"], criterion["name"], messages))
    return requests


@dataclass(frozen=True)
class CriterionScore:
    """A criterion's parsed score (None when the judge output was unusable, with `failure`)."""

    index: int | str
    domain1: str
    criterion: str
    score: float | None
    failure: str | None = None


def score_outputs(requests: Sequence[CriticRequest], outputs: Sequence[str]) -> list[CriterionScore]:
    """Parse the critic's output for each request (same order)."""
    assert len(requests) == len(outputs), f"{len(requests)} requests but {len(outputs)} critic outputs"
    scores = []
    for request, output in zip(requests, outputs):
        parsed = parse_critic_score(output)
        scores.append(CriterionScore(request.index, request.domain1, request.criterion, parsed.score, parsed.failure))
    return scores


@dataclass
class WritingBenchSummary:
    """Mean scores (1-10) overall, per domain and per query, and what failed to parse."""

    overall: float | None
    per_domain: dict[str, float]
    per_query: dict[int | str, float]
    failed_criteria: int = 0
    incomplete_queries: list[int | str] = field(default_factory=list)
    unscored_queries: list[int | str] = field(default_factory=list)


def aggregate(scores: Sequence[CriterionScore]) -> WritingBenchSummary:
    """Average criterion scores per query, then queries per domain and overall (see module notes)."""
    parsed: dict[int | str, list[float]] = defaultdict(list)
    domain_of: dict[int | str, str] = {}
    failed: dict[int | str, int] = defaultdict(int)
    for s in scores:
        domain_of[s.index] = s.domain1
        if s.score is None:
            failed[s.index] += 1
        else:
            parsed[s.index].append(s.score)
    per_query = {index: sum(v) / len(v) for index, v in parsed.items()}
    by_domain: dict[str, list[float]] = defaultdict(list)
    for index, value in per_query.items():
        by_domain[domain_of[index]].append(value)
    return WritingBenchSummary(
        overall=sum(per_query.values()) / len(per_query) if per_query else None,
        per_domain={d: sum(v) / len(v) for d, v in sorted(by_domain.items())},
        per_query=per_query,
        failed_criteria=sum(failed.values()),
        incomplete_queries=[i for i in domain_of if failed[i] and i in parsed],
        unscored_queries=[i for i in domain_of if i not in parsed],
    )


_ROW_FIELDS = {"index": (int, str), "domain1": str, "domain2": str, "query": str, "checklist": list}


def load_writingbench(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read WritingBench JSONL rows; a bad row raises LwzError naming the file, the line and the key."""
    rows = []
    for where, row in read_objects(path):
        for key, kind in _ROW_FIELDS.items():
            if key not in row:
                raise LwzError(where, key, f"missing (each row needs {', '.join(_ROW_FIELDS)})")
            if not isinstance(row[key], kind) or isinstance(row[key], bool):
                raise LwzError(where, key, f"has the wrong type: {type(row[key]).__name__}")
        for n, criterion in enumerate(row["checklist"]):
            if not isinstance(criterion, dict) or not isinstance(criterion.get("name"), str):
                raise LwzError(where, f"checklist.{n}", "must be an object with a string 'name'")
        if any(row["index"] == seen["index"] for seen in rows):
            raise LwzError(where, "index", f"{row['index']!r} repeats an earlier row's index")
        rows.append(row)
    return rows
