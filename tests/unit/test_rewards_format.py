import pytest

from lwz.errors import LwzError
from lwz.rewards.answer import extract_answer, split_think_answer
from lwz.rewards.format import FormatReward, is_well_formed
from lwz.rewards.repetition import duplicate_paragraph_ratio, ngram_repetition_rate, split_paragraphs, text_units

GOOD = "<think>Plan: three parts.</think>\n\n<answer>The final essay.</answer>"
ZH_GOOD = "<think>先列提纲，再写正文。</think><answer>秋天来了，树叶黄了。</answer>"


@pytest.mark.parametrize("response", [
    GOOD,
    ZH_GOOD,
    "  \n<think></think> <answer>x</answer>\n",                  # whitespace around, empty think allowed
])
def test_well_formed(response):
    assert is_well_formed(response)


@pytest.mark.parametrize("response", [
    "",
    "The final essay.",                                          # no tags
    "<answer>The final essay.</answer>",                         # no think
    "<think>plan</think>",                                       # no answer
    "<think>plan</think><answer>   \n </answer>",                # empty answer
    "<think>plan</think><answer>text",                           # unclosed answer (truncated)
    "<think>plan<think>more</think></think><answer>x</answer>",  # nested think
    "<think>plan</think><answer>a <answer>b</answer></answer>",  # nested answer
    "<think>use <answer> tags</think><answer>x</answer>",        # tag inside the think
    "<think>plan</think><answer>x</answer> P.S. more",           # text after </answer>
    "Sure! <think>plan</think><answer>x</answer>",               # text before <think>
    "<think>plan</think> Here it is: <answer>x</answer>",        # text between the segments
    "<think>plan</think><answer>x</answer><answer>y</answer>",   # two answers
    "<think>a</think><think>b</think><answer>x</answer>",        # two thinks
    "<answer>x</answer><think>plan</think>",                     # wrong order
    "<think>先想</think>好的：<answer>正文</answer>",              # Chinese text between
])
def test_malformed(response):
    assert not is_well_formed(response)


def test_stop_string_kept_by_the_rollout():
    cut = "<think>plan</think><answer>The essay."                   # cut at max_tokens before </answer>
    stopped = cut + "</answer>"                                    # stopped on the stop string, kept in the text
    assert not is_well_formed(cut)
    assert is_well_formed(stopped)
    assert not is_well_formed(stopped + "</answer>")              # the stop string once, not doubled
    assert extract_answer(cut) is None
    assert extract_answer(stopped) == "The essay."


def test_no_think_structure():
    assert is_well_formed("<answer>x</answer>", expect_think=False)
    assert not is_well_formed(GOOD, expect_think=False)
    assert not is_well_formed("<answer></answer>", expect_think=False)


def test_lenient_split_skips_tags_mentioned_in_the_plan():
    response = "<think>I will write inside <answer> tags.</think>\n<answer> 正文 </answer> trailing"
    assert split_think_answer(response) == ("I will write inside <answer> tags.", "正文")
    assert split_think_answer("<answer>only</answer>") == (None, "only")
    assert split_think_answer("<think>plan</think>") == ("plan", None)
    assert split_think_answer("<think>unclosed plan <answer>x</answer>") == (None, "x")
    assert extract_answer("<think>p</think><answer>a</answer><answer>b</answer>") == "a"


def test_units_and_ngram_repetition_rate_hand_computed():
    assert text_units("Hello, World! 你好 2024") == ["hello", "world", "你", "好", "2024"]
    # units a b c a b c, bigrams ab bc ca ab bc: 3 distinct of 5
    assert ngram_repetition_rate("a b c a b c", ngram=2) == pytest.approx(0.4)
    # mostly CJK: character bigrams 天天 x3
    assert ngram_repetition_rate("天天天天 ok", ngram=5, ngram_cjk=2) == pytest.approx(1 - 2 / 4)
    assert ngram_repetition_rate("", ngram=2) == 0.0
    assert ngram_repetition_rate("one two three", ngram=4) == 0.0
    assert ngram_repetition_rate("the cat sat on the mat", ngram=1) == pytest.approx(1 / 6)


def test_duplicate_paragraph_ratio_hand_computed():
    p1 = "the quick brown fox jumps over the lazy dog near the river bank today"
    p2 = "a completely different paragraph about writing long essays with clear structure"
    p1_edit = p1.replace("today", "tonight")                        # 12 of 13 bigrams shared: J = 12/14
    assert split_paragraphs(f"{p1}\n\n{p2}\n{p1}\n") == [p1, p2, p1]
    assert duplicate_paragraph_ratio(f"{p1}\n\n{p2}\n\n{p1}", ngram=2) == pytest.approx(1 / 3)
    assert duplicate_paragraph_ratio(f"{p1}\n{p1_edit}", ngram=2, paragraph_similarity=0.8) == 0.5
    assert duplicate_paragraph_ratio(f"{p1}\n{p1_edit}", ngram=2, paragraph_similarity=0.9) == 0.0
    assert duplicate_paragraph_ratio(f"# Title\n{p1}\n# Title\n{p2}", ngram=2) == 0.0   # headings too short
    assert duplicate_paragraph_ratio(p1) == 0.0 and duplicate_paragraph_ratio("") == 0.0
    zh = "秋天来了，树叶慢慢变黄，一片一片地落在安静的小路上。"
    assert duplicate_paragraph_ratio(f"{zh}\n{zh}\n{zh}\n{p2}") == pytest.approx(2 / 4)


def _essay(paragraphs: list[str]) -> str:
    return "<think>Plan the essay.</think><answer>" + "\n\n".join(paragraphs) + "</answer>"


DISTINCT = [
    "Autumn arrives quietly in the northern hills, painting the maples a deep shade of red.",
    "Farmers hurry to bring in the last of the harvest before the first frost settles.",
    "In the evenings, families gather around the stove and tell stories of summers long past.",
    "By November the geese have gone south, and the fields lie bare under a pale sky.",
]


def test_format_reward_structure_and_repetition():
    reward = FormatReward()
    assert reward.score(_essay(DISTINCT), {}) == 1.0
    assert reward.score(_essay(DISTINCT).replace("<think>", ""), {}) == 0.0
    copied = _essay(DISTINCT + DISTINCT)                       # second half copies the first
    assert reward.repetition(copied.split("<answer>")[1].removesuffix("</answer>"))[1] == 0.5
    assert reward.score(copied, {}) == 0.0
    assert FormatReward(max_duplicate_paragraphs=1.0, max_ngram_repeat=1.0).score(copied, {}) == 1.0
    one_line_loop = _essay([" ".join(["the story goes on and on"] * 30)])
    assert FormatReward(max_duplicate_paragraphs=1.0).score(one_line_loop, {}) == 0.0
    zh = "秋天来了，树叶慢慢变黄，一片一片地落在安静的小路上，孩子们在田野里奔跑。"
    assert reward.score(f"<think>先想</think><answer>{zh}</answer>", {}) == 1.0
    assert reward.score(f"<think>先想</think><answer>{zh}\n{zh}\n{zh}</answer>", {}) == 0.0
    assert FormatReward(expect_think=False)(["<answer>x</answer>", GOOD], [{}, {}]) == [1.0, 0.0]


@pytest.mark.parametrize("params,key", [
    ({"ngram": 0}, "ngram"), ({"ngram_cjk": 1.5}, "ngram_cjk"), ({"max_ngram_repeat": 1.5}, "max_ngram_repeat"),
    ({"paragraph_similarity": 0}, "paragraph_similarity"), ({"expect_think": "yes"}, "expect_think"),
    ({"max_duplicate_paragraphs": -0.1}, "max_duplicate_paragraphs"),
    ({"min_paragraph_units": True}, "min_paragraph_units"),
])
def test_bad_params_are_errors_naming_the_key(params, key):
    with pytest.raises(LwzError) as info:
        FormatReward(**params)
    assert info.value.key == key
