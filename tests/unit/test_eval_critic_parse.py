"""WritingBench critic prompts, judge-output parsing (noisy fixture), aggregation; pairwise verdicts."""

import json
from pathlib import Path

import pytest

from lwz.errors import LwzError
from lwz.eval import benchmark_file
from lwz.eval.critic_parse import parse_critic_score, parse_verdict
from lwz.eval.writingbench import (
    CriterionScore,
    aggregate,
    critic_messages,
    critic_requests,
    load_critic_prompts,
    load_writingbench,
    score_outputs,
)

CASES = [json.loads(line) for line in (Path(__file__).parents[1] / "data" / "critic_outputs.jsonl").open()]


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_noisy_critic_outputs_parse_as_expected(case):
    parsed = parse_critic_score(case["output"])
    assert parsed.score == case["score"]
    if case["score"] is None:
        assert case["failure"] in parsed.failure
    else:
        assert parsed.failure is None


def test_parsed_reason_is_kept():
    parsed = parse_critic_score('```json\n{"score": 7, "reason": "Good coverage."}\n```')
    assert (parsed.score, parsed.reason) == (7.0, "Good coverage.")


def test_critic_prompt_fills_slots_and_keeps_literal_braces():
    prompts = load_critic_prompts()
    row = load_writingbench(benchmark_file("writingbench_sample.jsonl"))[0]
    criterion = row["checklist"][0]
    response = "<think>plan with {braces}</think>\n\nThe essay {x} body."
    system, user = critic_messages(prompts, row["query"], criterion, response)
    assert system == {"role": "system", "content": prompts.system}
    assert system["content"].startswith("You are an expert evaluator")
    content = user["content"]
    assert '{\n    "score": an integer score between 1 to 10,' in content
    assert "{{" not in content and "{criteria}" not in content and "{query}" not in content
    assert f"** Query **\n```{row['query']}```" in content
    assert "** Response **\n```The essay {x} body.```" in content
    assert "plan with" not in content
    assert content.count(repr(criterion["name"])) == 2  # criteria appear twice, as WritingBench's str(dict)


def test_critic_requests_cover_every_criterion_of_answered_rows():
    rows = load_writingbench(benchmark_file("writingbench_sample.jsonl"))
    responses = {rows[0]["index"]: "answer one", rows[1]["index"]: "answer two"}
    requests = critic_requests(rows, responses, load_critic_prompts())
    assert len(requests) == len(rows[0]["checklist"]) + len(rows[1]["checklist"])
    assert [r.criterion for r in requests[:5]] == [c["name"] for c in rows[0]["checklist"]]
    assert {r.index for r in requests} == set(responses)


def test_scores_aggregate_per_query_domain_and_overall_and_failures_are_reported():
    outputs = ['{"score": 8, "reason": "a"}', '{"score": 6, "reason": "b"}',  # query 1 -> 7
               '{"score": 9, "reason": "c"}', "no score here",               # query 2 -> 9, one failure
               "garbage", '{"score": 42}']                                    # query 3 -> unscored
    rows = [
        {"index": i, "domain1": domain, "query": f"q{i}", "checklist": [{"name": "c1"}, {"name": "c2"}]}
        for i, domain in [(1, "Finance"), (2, "Finance"), (3, "Academic")]
    ]
    requests = critic_requests(rows, {1: "r1", 2: "r2", 3: "r3"}, load_critic_prompts())
    summary = aggregate(score_outputs(requests, outputs))
    assert summary.per_query == {1: 7.0, 2: 9.0}
    assert summary.per_domain == {"Finance": 8.0}
    assert summary.overall == 8.0
    assert summary.failed_criteria == 3
    assert summary.incomplete_queries == [2]
    assert summary.unscored_queries == [3]


def test_overall_is_mean_over_queries_not_domains():
    scores = [CriterionScore(1, "A", "c", 10.0), CriterionScore(2, "B", "c", 4.0), CriterionScore(3, "B", "c", 6.0)]
    summary = aggregate(scores)
    assert summary.per_domain == {"A": 10.0, "B": 5.0}
    assert summary.overall == pytest.approx(20.0 / 3)


def test_bad_writingbench_row_names_file_line_and_key(tmp_path):
    path = tmp_path / "wb.jsonl"
    good = {"index": 1, "domain1": "A", "domain2": "B", "query": "q", "checklist": [{"name": "c"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "checklist": [{"criteria": "x"}]}) + "\n")
    with pytest.raises(LwzError, match=rf"{path}:2: checklist.0: must be an object with a string 'name'"):
        load_writingbench(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(LwzError, match=rf"{path}:2: index: 1 repeats an earlier row's index"):
        load_writingbench(path)


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Response A is more complete.\n[[A]]", "a"),
        ("Final verdict: [[B]]", "b"),
        ("They are equally good. [[C]]", "tie"),
        ("[[ tie ]]", "tie"),
        ("[[a]]", "a"),
        ("<think>Leaning [[A]]...</think>On reflection B is better: [[B]]", "b"),
        ("Output [[A]] if A is better, [[B]] if B is better. My verdict: [[B]]", "b"),
        ("I prefer A.", None),
        ("[[D]]", None),
    ],
)
def test_pairwise_verdicts(text, verdict):
    assert parse_verdict(text) == verdict
