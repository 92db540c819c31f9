"""Run a benchmark with a vLLM engine: generate answers, score them, write results, summary and plots."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lwz import atomic
from lwz.data.templates import render_prompt
from lwz.errors import LwzError
from lwz.eval import benchmark_file
from lwz.eval.longbench_write import (average_score, length_monitors, load_longbench, plot_scored,
                                      score_results)
from lwz.eval.writingbench import aggregate, critic_requests, load_critic_prompts, load_writingbench, score_outputs
from lwz.rewards.answer import extract_answer
from lwz.engines.vllm_engine import SamplingSettings, VllmEngine

log = logging.getLogger(__name__)
BENCHES = ("longbench_write", "writingbench")


@dataclass(frozen=True)
class GenerationSettings:
    """How the evaluated model writes (defaults: LongWriter-Zero's model card)."""

    template: str = "think"
    chat_template: bool = False
    max_tokens: int = 15500
    temperature: float = 0.6
    top_p: float = 0.95
    stop: tuple[str, ...] = ("<|user|>", "<|endoftext|>", "</answer>")
    limit: int | None = None
    seed: int = 0
    progress: bool = False   # progress bars of answers and critic calls (`lwz eval`; not inside training)


def prompt_text(engine: VllmEngine, question: str, settings: GenerationSettings) -> str:
    """`question` as the engine receives it: templated, through the chat template when asked."""
    return render_prompt(question, settings.template, engine.tokenizer if settings.chat_template else None)


def fitting_rows(engine: VllmEngine, rows: list[dict[str, Any]], question: str, settings: GenerationSettings
                 ) -> tuple[list[dict[str, Any]], int]:
    """The rows whose templated `question` field and an answer of `settings.max_tokens` fit the engine's
    context, and how many did not (they are skipped with a warning, never sent to the engine)."""
    kept = [r for r in rows if engine.prompt_fits(prompt_text(engine, r[question], settings), settings.max_tokens)]
    if len(kept) < len(rows):
        log.warning("skipped %d of %d items: prompt + %d answer tokens exceed the engine's context of %d tokens",
                    len(rows) - len(kept), len(rows), settings.max_tokens, engine.max_model_len)
    return kept, len(rows) - len(kept)


def write_answers(engine: VllmEngine, questions: Sequence[str], settings: GenerationSettings) -> list[dict[str, Any]]:
    """One response per question with the template; `answer` is the text inside <answer> (else all of it)."""
    prompts = [prompt_text(engine, q, settings) for q in questions]
    sampling = SamplingSettings(1, settings.temperature, settings.top_p, settings.max_tokens, settings.stop)
    groups = engine.generate(prompts, sampling, seed=settings.seed, progress="answers" if settings.progress else None)
    out = []
    for group in groups:
        c = group[0]
        answer = extract_answer(c.text)
        out.append({"response": c.text, "answer": c.text if answer is None else answer,
                    "tokens": len(c.response_ids), "truncated": c.truncated})
    return out


def eval_longbench_write(engine: VllmEngine, settings: GenerationSettings, out_dir: Path,
                         data: str | Path | None = None) -> dict[str, Any]:
    """S_l per item and averaged, plus the required-vs-produced scatter."""
    rows, skipped = fitting_rows(engine, load_longbench(data or benchmark_file("longbench_write.jsonl"))[: settings.limit],
                                 "prompt", settings)
    if not rows:
        raise LwzError(None, "--max-model-len", f"no item fits the engine's context ({skipped} skipped)")
    answers = write_answers(engine, [r["prompt"] for r in rows], settings)
    scored = score_results([{"length": r["length"], "response": a["answer"]} for r, a in zip(rows, answers)])
    items = [{**row, **ans, **asdict(s)} for row, ans, s in zip(rows, answers, scored)]
    summary = {"bench": "longbench_write", "items": len(items), "score": average_score(scored),
               "truncated_rate": sum(a["truncated"] for a in answers) / len(answers), "skipped_too_long": skipped,
               **length_monitors(scored, [a["response"] for a in answers], think=settings.template == "think")}
    _write(out_dir, items, summary)
    plot_scored(scored, out_dir / "length_scatter.png", title=f"LongBench-Write S_l = {summary['score']:.1f}")
    return summary


def eval_writingbench(engine: VllmEngine, critic: VllmEngine, settings: GenerationSettings, out_dir: Path,
                      data: str | Path | None = None, critic_max_tokens: int = 512) -> dict[str, Any]:
    """Each query scored against each checklist criterion by the critic; means per query and domain."""
    rows, skipped = fitting_rows(engine, load_writingbench(data or benchmark_file("writingbench_sample.jsonl"))
                                 [: settings.limit], "query", settings)
    if not rows:
        raise LwzError(None, "--max-model-len", f"no item fits the engine's context ({skipped} skipped)")
    answers = write_answers(engine, [r["query"] for r in rows], settings)
    requests = critic_requests(rows, {r["index"]: a["response"] for r, a in zip(rows, answers)},
                               load_critic_prompts())
    tokenizer = critic.tokenizer
    prompts = [tokenizer.apply_chat_template(q.messages, tokenize=False, add_generation_prompt=True)
               for q in requests]
    fits = [critic.prompt_fits(p, critic_max_tokens) for p in prompts]  # a critic call that does not fit fails
    judged = critic.generate([p for p, f in zip(prompts, fits) if f], SamplingSettings(1, 0.0, 1.0, critic_max_tokens),
                             progress="critic" if settings.progress else None)
    texts = iter(g[0].text for g in judged)
    scores = score_outputs(requests, [next(texts) if f else "" for f in fits])
    result = aggregate(scores)
    items = [{**row, **ans, "score": result.per_query.get(row["index"])} for row, ans in zip(rows, answers)]
    summary = {"bench": "writingbench", "items": len(items), "score": result.overall,
               "per_domain": result.per_domain, "failed_criteria": result.failed_criteria,
               "unscored_queries": result.unscored_queries, "skipped_too_long": skipped,
               "critic_too_long": fits.count(False)}
    _write(out_dir, items, summary)
    atomic.write_text(out_dir / "critic.jsonl", "".join(json.dumps(asdict(s), ensure_ascii=False) + "\n"
                                                         for s in scores))
    return summary


def run_benchmark(bench: str, engine: VllmEngine, settings: GenerationSettings, out_dir: Path,
                  critic: VllmEngine | None = None, data: str | Path | None = None) -> dict[str, Any]:
    """Run `bench` and return its summary (also written to out_dir/summary.json)."""
    start = time.perf_counter()
    if bench == "longbench_write":
        summary = eval_longbench_write(engine, settings, out_dir, data)
    else:
        summary = eval_writingbench(engine, critic or engine, settings, out_dir, data)
    summary["seconds"] = time.perf_counter() - start
    atomic.write_text(out_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def _write(out_dir: Path, items: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "results.jsonl", "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    atomic.write_text(out_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
