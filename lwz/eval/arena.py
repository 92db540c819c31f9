"""Arena-Write style evaluation: a judge compares models' answers to the same prompts, both orders.

Inputs are `lwz eval` results files (one per model: rows with `prompt` and `answer`); every pair of
models is judged on every shared prompt in both orders, unparseable verdicts are counted and left
out (never guessed), and the judgments give a Bradley-Terry leaderboard with bootstrap intervals.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lwz import atomic
from lwz.errors import LwzError
from lwz.eval.critic_parse import parse_verdict
from lwz.eval.ratings import Judgment, leaderboard, pairwise_judge_messages, render_leaderboard
from lwz.jsonl import read_objects
from lwz.engines.vllm_engine import SamplingSettings, VllmEngine


def load_answers(results: Mapping[str, str | Path]) -> dict[str, dict[str, str]]:
    """model -> {prompt: answer} from each model's results file."""
    answers = {}
    for model, path in results.items():
        rows = {}
        for where, row in read_objects(path):
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("answer"), str):
                raise LwzError(where, "answer", "rows need 'prompt' and 'answer' strings (lwz eval results)")
            rows[row["prompt"]] = row["answer"]
        answers[model] = rows
    return answers


def run_arena(answers: Mapping[str, Mapping[str, str]], judge: VllmEngine, out_dir: Path,
              max_tokens: int = 1024, rounds: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Judge every pair on every shared prompt in both orders; write judgments, leaderboard and summary."""
    if len(answers) < 2:
        raise LwzError(None, "--answers", "an arena needs at least two models")
    requests = []
    for a, b in itertools.combinations(sorted(answers), 2):
        for prompt in sorted(set(answers[a]) & set(answers[b])):
            for first, second in ((a, b), (b, a)):
                requests.append((prompt, first, second))
    if not requests:
        raise LwzError(None, "--answers", "the models share no prompt")
    tokenizer = judge.tokenizer
    texts = [tokenizer.apply_chat_template(pairwise_judge_messages(p, answers[x][p], answers[y][p]),
                                           tokenize=False, add_generation_prompt=True) for p, x, y in requests]
    outputs = judge.generate(texts, SamplingSettings(1, 0.0, 1.0, max_tokens))
    rows, judgments = [], []
    for (prompt, first, second), group in zip(requests, outputs):
        verdict = parse_verdict(group[0].text)
        rows.append({"prompt": prompt, "model_a": first, "model_b": second, "winner": verdict,
                     "judge_output": group[0].text})
        if verdict is not None:
            judgments.append(Judgment(first, second, verdict))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "judgments.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary: dict[str, Any] = {"comparisons": len(rows), "parsed": len(judgments), "unparsed": len(rows) - len(judgments)}
    if len({m for j in judgments for m in (j.model_a, j.model_b)}) >= 2:
        table = leaderboard(judgments, rounds=rounds, seed=seed, l2=0.01)
        summary["leaderboard"] = [asdict(r) for r in table]
        atomic.write_text(out_dir / "leaderboard.txt", render_leaderboard(table) + "\n")
    atomic.write_text(out_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
