from importlib import resources

import pytest

from lwz.data.templates import TEMPLATES, load_template, render_prompt
from lwz.errors import LwzError

EN_START = "A conversation between the user and the assistant."
ZH_START = "用户与助手之间的对话。"


def test_think_template_english_verbatim_slot_filled():
    prompt = render_prompt("Write a 500-word essay on tides.")
    assert prompt.startswith(EN_START)
    assert "within <think> </think> and <answer> </answer> tags" in prompt
    assert prompt.endswith("<|user|>: Write a 500-word essay on tides. <|assistant|>:")
    assert prompt == load_template("think", "en").replace("{question}", "Write a 500-word essay on tides.")


def test_chinese_question_picks_the_chinese_template():
    prompt = render_prompt("写一篇关于秋天的散文，800字")
    assert prompt.startswith(ZH_START) and "<think> </think>" in prompt
    assert prompt.endswith("<|用户|>: 写一篇关于秋天的散文，800字 <|助手|>:")
    assert render_prompt("Translate 你好 into English").startswith(ZH_START)   # any CJK character


def test_nothink_templates_ask_for_the_answer_only():
    for question, start in (("Write a poem", EN_START), ("写一首诗", ZH_START)):
        prompt = render_prompt(question, "nothink")
        assert prompt.startswith(start) and "<answer>" in prompt and "<think>" not in prompt
        assert question in prompt


def test_question_with_braces_is_kept_literally():
    question = "Explain {question} and {0} placeholders in Python's str.format"
    assert render_prompt(question).count(question) == 1


def test_every_template_has_one_slot_and_attribution_exists():
    for template in (t for t in TEMPLATES if t != "raw"):
        for language in ("en", "zh"):
            assert load_template(template, language).count("{question}") == 1
    attribution = (resources.files("lwz") / "assets" / "templates" / "ATTRIBUTION.md").read_text("utf-8")
    assert "THU-KEG/LongWriter-Zero-32B" in attribution and "Apache-2.0" in attribution


def test_unknown_template_is_an_error_naming_the_key():
    with pytest.raises(LwzError, match="did you mean 'nothink'") as info:
        render_prompt("Write", "no_think")
    assert info.value.key == "rollout.template"


def test_raw_template_is_the_request_itself():
    assert render_prompt("写一首诗", "raw") == "写一首诗"


class ChatTokenizer:
    """A stand-in for an instruct tokenizer's `apply_chat_template` (ChatML), recording the messages."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        self.messages = messages
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
            "<|im_start|>assistant\n"


@pytest.mark.parametrize("question, language", [("Write a poem", "en"), ("写一首诗", "zh")])
def test_chat_template_sends_the_instructions_as_the_system_turn(question, language):
    tokenizer = ChatTokenizer()
    prompt = render_prompt(question, "nothink", tokenizer)
    system, user = tokenizer.messages
    assert system["role"] == "system" and user == {"role": "user", "content": question}
    assert system["content"] == load_template("nothink", language).split(" <|")[0].strip()
    assert system["content"].endswith("</answer>") and "{question}" not in system["content"]
    assert prompt.endswith("<|im_start|>assistant\n")
    render_prompt(question, "raw", tokenizer)
    assert tokenizer.messages == [{"role": "user", "content": question}]
