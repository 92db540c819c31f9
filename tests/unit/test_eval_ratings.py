"""Arena-Write ratings: Bradley-Terry against hand values, order invariance, Elo updates, bootstrap, table."""

import math
import random

import pytest

from lwz.errors import LwzError
from lwz.eval.ratings import (
    Judgment,
    bootstrap_intervals,
    bradley_terry,
    judgments_from_rows,
    leaderboard,
    online_elo,
    pairwise_judge_messages,
    render_leaderboard,
)


def games(a, b, wins, losses, ties=0):
    return [Judgment(a, b, "a")] * wins + [Judgment(a, b, "b")] * losses + [Judgment(a, b, "tie")] * ties


def arena(seed=0, n=300):
    """Random judgments among four models of known strength (Elo scale)."""
    strength = {"zero": 1400, "r1": 1300, "gpt4o": 1000, "sft": 500}
    rng = random.Random(seed)
    judgments = []
    for _ in range(n):
        a, b = rng.sample(sorted(strength), 2)
        p_a = 1 / (1 + 10 ** ((strength[b] - strength[a]) / 400))
        u = rng.random()
        judgments.append(Judgment(a, b, "tie" if u > 0.9 else ("a" if u < 0.9 * p_a else "b")))
    return judgments


def test_three_wins_to_one_is_400_log10_3_apart_around_1000():
    ratings = bradley_terry(games("x", "y", 3, 1))
    assert ratings["x"] - ratings["y"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (ratings["x"] + ratings["y"]) / 2 == pytest.approx(1000)


def test_ties_count_half_a_win():
    ratings = bradley_terry(games("x", "y", 1, 0, ties=1))  # 1.5 to 0.5
    assert ratings["x"] - ratings["y"] == pytest.approx(400 * math.log10(3), abs=1e-6)


def test_three_model_chain_matches_hand_values():
    # x beats y 2:1 and y beats z 2:1, x and z never meet: the MLE puts each step at 400*log10(2).
    judgments = games("x", "y", 2, 1) + games("y", "z", 2, 1)
    ratings = bradley_terry(judgments, anchor="z", anchor_rating=0.0)
    step = 400 * math.log10(2)
    assert ratings == pytest.approx({"x": 2 * step, "y": step, "z": 0.0}, abs=1e-6)


def test_mle_expected_wins_equal_observed_wins():
    judgments = arena()
    ratings = bradley_terry(judgments)
    for model in ratings:
        observed = expected = 0.0
        for j in judgments:
            if model not in (j.model_a, j.model_b):
                continue
            other = j.model_b if model == j.model_a else j.model_a
            expected += 1 / (1 + 10 ** ((ratings[other] - ratings[model]) / 400))
            observed += 0.5 if j.winner == "tie" else float((j.winner == "a") == (model == j.model_a))
        assert expected == pytest.approx(observed, abs=1e-6)


def test_bradley_terry_ignores_judgment_order_and_presentation_side():
    judgments = arena()
    reference = bradley_terry(judgments)
    shuffled = judgments[:]
    random.Random(1).shuffle(shuffled)
    swapped = [Judgment(j.model_b, j.model_a, {"a": "b", "b": "a", "tie": "tie"}[j.winner]) for j in judgments]
    assert bradley_terry(shuffled) == pytest.approx(reference, abs=1e-6)
    assert bradley_terry(swapped) == pytest.approx(reference, abs=1e-6)
    assert sorted(reference, key=reference.get, reverse=True) == ["zero", "r1", "gpt4o", "sft"]


def test_anchor_fixes_one_model_and_keeps_differences():
    judgments = arena()
    centred, anchored = bradley_terry(judgments), bradley_terry(judgments, anchor="gpt4o", anchor_rating=1000)
    assert anchored["gpt4o"] == 1000
    assert anchored["zero"] - anchored["sft"] == pytest.approx(centred["zero"] - centred["sft"])


def test_unbeaten_model_needs_a_prior():
    judgments = games("x", "y", 3, 0) + games("y", "z", 1, 1)
    with pytest.raises(LwzError, match="unbounded"):
        bradley_terry(judgments)
    ratings = bradley_terry(judgments, l2=0.1)
    assert ratings["x"] > ratings["y"] and all(math.isfinite(r) for r in ratings.values())


def test_online_elo_hand_values_and_order_dependence():
    ratings = online_elo([Judgment("a", "b", "a")], k=32)
    assert ratings == pytest.approx({"a": 1016.0, "b": 984.0})
    ratings = online_elo([Judgment("a", "b", "a"), Judgment("a", "b", "b")], k=32)
    expected_b = 1 / (1 + 10 ** ((1016 - 984) / 400))
    assert ratings["b"] == pytest.approx(984 + 32 * (1 - expected_b))
    assert ratings["a"] + ratings["b"] == pytest.approx(2000)
    reversed_order = online_elo([Judgment("a", "b", "b"), Judgment("a", "b", "a")], k=32)
    assert reversed_order["a"] != pytest.approx(ratings["a"])


def test_online_elo_tie_between_equals_changes_nothing():
    assert online_elo([Judgment("a", "b", "tie")]) == {"a": 1000.0, "b": 1000.0}


def test_bootstrap_intervals_contain_the_estimate_and_are_reproducible():
    judgments = arena()
    ratings = bradley_terry(judgments)
    intervals = bootstrap_intervals(judgments, rounds=100, seed=7)
    for model, (low, high) in intervals.items():
        assert low < ratings[model] < high
    assert bootstrap_intervals(judgments, rounds=100, seed=7) == intervals
    assert bootstrap_intervals(judgments, rounds=100, seed=8) != intervals


def test_leaderboard_rows_and_table():
    judgments = games("zero", "sft", 5, 1, ties=2) + games("sft", "zero", 1, 4) + games("zero", "gpt4o", 3, 2)
    judgments += games("gpt4o", "sft", 3, 2, ties=1)
    rows = leaderboard(judgments, rounds=50, seed=0, l2=0.01)
    assert [r.model for r in rows] == ["zero", "gpt4o", "sft"]
    zero = rows[0]
    assert (zero.wins, zero.losses, zero.ties, zero.games) == (5 + 4 + 3, 1 + 1 + 2, 2, 8 + 5 + 5)
    assert sum(r.wins for r in rows) == sum(r.losses for r in rows)
    assert all(r.ci_low <= r.rating <= r.ci_high for r in rows)
    table = render_leaderboard(rows).splitlines()
    assert table[0].split() == ["rank", "model", "rating", "95%", "CI", "wins", "losses", "ties", "games"]
    assert table[2].split()[:3] == ["1", "zero", f"{zero.rating:.0f}"]
    assert len(table) == 2 + len(rows)


def test_judgments_from_rows_validates():
    rows = [{"model_a": "x", "model_b": "y", "winner": "tie"}]
    assert judgments_from_rows(rows) == [Judgment("x", "y", "tie")]
    with pytest.raises(LwzError, match=r"j.jsonl: 1.winner: must be one of a, b, tie, got 'A'"):
        judgments_from_rows(rows + [{"model_a": "x", "model_b": "y", "winner": "A"}], where="j.jsonl")
    with pytest.raises(LwzError, match=r"0.model_b: must differ from model_a"):
        judgments_from_rows([{"model_a": "x", "model_b": "x", "winner": "a"}])


def test_pairwise_judge_prompt_holds_both_responses_in_order():
    system, user = pairwise_judge_messages("Write {a} story.", "first {text}", "second text")
    assert system["role"] == "system" and "judge" in system["content"]
    content = user["content"]
    assert "Write {a} story." in content
    assert content.index("first {text}") < content.index("second text")
    assert '"[[A]]"' in content and '"[[B]]"' in content and '"[[C]]"' in content
