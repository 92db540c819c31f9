import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lwz.errors import LwzError
from lwz.rewards.length import LengthReward, length_reward, length_score


def _response(answer: str, think: str = "a long plan with many words") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def test_hand_computed_english_chinese_and_mixed():
    assert length_reward("one two three four five", (5, 10)) == 1.0
    assert length_reward("你好世界", (8, 10)) == 0.5                       # 4 CJK characters, 4 / 8
    assert length_reward("我爱 Python 和 Rust", (10, 20)) == 0.5          # 3 CJK + 2 words = 5, 5 / 10
    assert length_reward("天" * 30, (10, 20), l_max=40) == 0.5            # (40 - 30) / (40 - 20)
    assert length_reward("word " * 25, (10, 20), l_max=40) == 0.75        # (40 - 25) / 20
    assert length_reward("word " * 50, (10, 20), l_max=40) == 0.0         # past l_max: clipped at 0
    assert length_reward("", (100, 200)) == 0.0


def test_term_measures_only_the_answer():
    reward = LengthReward(l_max=100)
    sample = {"length_range": [4, 6]}
    long_think = " ".join(["plan"] * 80)
    assert reward.score(_response("一二三四五", think=long_think), sample) == 1.0
    assert reward.score(_response("one two"), sample) == 0.5
    assert reward([_response("one two"), _response("一 two 三 four")], [sample, sample]) == [0.5, 1.0]


def test_missing_answer_gets_zero_and_the_kept_stop_string_closes_it():
    sample = {"length_range": [2, 4]}
    cut = "<think>plan</think><answer>three short words"
    assert LengthReward().score(cut, sample) == 0.0
    assert LengthReward().score(cut + "</answer>", sample) == 1.0
    assert LengthReward()([cut, cut + "</answer>"], [sample, sample]) == [0.0, 1.0]


def test_zero_range_is_constant_whatever_the_answer():
    for reward, constant in ((LengthReward(), 1.0), (LengthReward(zero_range_reward=0.25), 0.25)):
        answers = [_response(""), _response("word " * 5000), "no tags at all", _response("字" * 30000)]
        assert reward(answers, [{"length_range": [0, 0]}] * len(answers)) == [constant] * len(answers)
    assert length_score(123, 0, 0, zero_range_reward=0.5) == 0.5


def test_numpy_and_tuple_ranges_are_accepted():
    assert LengthReward().score(_response("a b c"), {"length_range": np.array([3, 5])}) == 1.0
    assert length_reward("a b", (np.int64(4), np.int64(8))) == 0.5


@pytest.mark.parametrize("bad", [(10, 5), (-1, 5), (-5, -1), (1.5, 3), ("1", "2"), (1, 2, 3), "12", None, (True, 2)])
def test_invalid_ranges_are_errors_naming_the_key(bad):
    with pytest.raises(LwzError) as info:
        LengthReward().score(_response("a"), {"length_range": bad})
    assert info.value.key == "length_range"


def test_missing_range_and_bad_params_are_errors():
    with pytest.raises(LwzError, match="annotate") as info:
        LengthReward().score(_response("a"), {"prompt": "write"})
    assert info.value.key == "length_range"
    with pytest.raises(LwzError, match="must exceed") as info:
        length_reward("a", (100, 20000), l_max=20000)
    assert info.value.key == "l_max"
    for params, key in (({"l_max": 0}, "l_max"), ({"l_max": 2.5}, "l_max"),
                        ({"zero_range_reward": 2.0}, "zero_range_reward"), ({"zero_range_reward": "1"}, "zero_range_reward")):
        with pytest.raises(LwzError) as info:
            LengthReward(**params)
        assert info.value.key == key


ranges = st.tuples(st.integers(0, 12000), st.integers(0, 3000)).map(lambda t: (t[0], t[0] + t[1]))


@given(ranges, st.integers(0, 40000), st.integers(1, 20000))
def test_reward_lies_in_unit_interval(length_range, length, extra):
    lo, hi = length_range
    assert 0.0 <= length_score(length, lo, hi, l_max=hi + extra) <= 1.0


@given(ranges.filter(lambda r: r[1] > 0), st.data())
def test_reward_is_one_inside_the_range(length_range, data):
    lo, hi = length_range
    assert length_score(data.draw(st.integers(lo, hi)), lo, hi) == 1.0


@given(ranges.filter(lambda r: r[0] > 1), st.data())
def test_reward_increases_below_the_range(length_range, data):
    lo, hi = length_range
    shorter = data.draw(st.integers(0, lo - 2))
    longer = data.draw(st.integers(shorter + 1, lo - 1))
    assert length_score(shorter, lo, hi) < length_score(longer, lo, hi) < 1.0


@given(ranges.filter(lambda r: r[1] > 0), st.integers(2, 20000), st.data())
def test_reward_decreases_above_the_range_until_l_max(length_range, extra, data):
    lo, hi = length_range
    l_max = hi + extra
    shorter = data.draw(st.integers(hi + 1, l_max - 1))
    longer = data.draw(st.integers(shorter + 1, l_max))
    assert 1.0 > length_score(shorter, lo, hi, l_max=l_max) > length_score(longer, lo, hi, l_max=l_max) >= 0.0
    assert length_score(l_max + data.draw(st.integers(0, 10**6)), lo, hi, l_max=l_max) == 0.0


def test_measure_response_counts_the_whole_text():
    from lwz.rewards.length import LengthReward

    sample = {"length_range": [2, 4]}
    assert LengthReward(measure="response").score("one two three", sample) == 1.0
    assert LengthReward().score("one two three", sample) == 0.0          # no <answer>: nothing to count
