import pytest

from lwz.rewards.format import FormatReward
from lwz.rewards.metrics import reward_hacking_metrics

P1 = "Autumn arrives quietly in the northern hills, painting the maples a deep shade of red."
P2 = "Farmers hurry to bring in the last of the harvest before the first frost settles."


def test_batch_metrics_hand_computed():
    responses = [
        "<think>one two three four</think><answer>" + " ".join(["word"] * 10) + "</answer>",   # 10 in [8, 12]
        "<think>plan</think><answer>秋天来了</answer>",                                       # 4 < [8, 12]
        "<think>plan</think>no answer here",                                                  # malformed
        f"<think>p l a n s</think><answer>{P1}\n{P1}\n{P2}</answer>",                          # 45 words, [0, 0]
    ]
    samples = [{"length_range": [8, 12]}, {"length_range": [8, 12]}, {"length_range": [8, 12]},
               {"length_range": [0, 0]}]
    metrics = reward_hacking_metrics(responses, samples)
    assert metrics["format_failure_rate"] == 0.25
    assert metrics["answer_missing_rate"] == 0.25
    assert metrics["answer_length_mean"] == pytest.approx((10 + 4 + 45) / 3)
    assert metrics["answer_length_to_target"] == pytest.approx((10 / 10 + 4 / 10) / 2)
    assert metrics["answer_in_range_rate"] == 0.5
    assert metrics["think_length_mean"] == pytest.approx((4 + 1 + 1 + 5) / 4)
    assert metrics["duplicate_paragraph_ratio"] == pytest.approx((0 + 0 + 0 + 1 / 3) / 4)
    # "word" x10: 7 four-grams, 1 distinct; 秋天来了: fewer than 8 characters; the malformed one measured
    # whole (5 words, no repeat); P1 P1 P2: 42 four-grams, the 12 inside the second P1 repeat
    assert metrics["ngram_repetition_rate"] == pytest.approx((6 / 7 + 0 + 0 + 12 / 42) / 4)
    assert metrics["repetitive_rate"] == pytest.approx(2 / 4)   # "word" x10 (0.86 > 0.4); P1 P1 P2 (1/3 > 0.2)
    assert all(isinstance(v, float) for v in metrics.values())


def test_settings_and_left_out_keys():
    responses = ["<answer>a b c</answer>", "<answer>a b c d e f g h</answer>"]
    samples = [{}, {"length_range": [0, 0]}]
    metrics = reward_hacking_metrics(responses, samples, settings=FormatReward(expect_think=False))
    assert metrics["format_failure_rate"] == 0.0 and metrics["answer_length_mean"] == 5.5
    assert "answer_in_range_rate" not in metrics and "think_length_mean" not in metrics
    assert reward_hacking_metrics([], []) == {}
