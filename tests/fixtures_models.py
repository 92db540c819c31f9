"""Session fixtures for locally built models (`from fixtures_models import tiny_qwen2`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lwz.tiny import tiny_qwen2_path


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    """The tiny random-weight Qwen2 folder with the Qwen2.5 tokenizer (built once, cached)."""
    return tiny_qwen2_path()


# Output-layer rows kept by `peaked_qwen2`: 16 English words and 16 punctuation marks / digits.
PEAKED_WORDS = (" the", " cat", " sea", " house", " tree", " blue", " runs", " sun", " city", " old", " road",
                " song", " rain", " light", " dog", " bird")
PEAKED_MARKS = (",", ".", "!", "?", ";", ":", "1", "2", "3", "4", "5", "-", "(", ")", "7", "9")


@pytest.fixture(scope="session")
def peaked_qwen2(tmp_path_factory) -> Path:
    """The tiny Qwen2 shape whose output layer only scores 32 tokens (16 words, 16 marks).

    A random Qwen2 spreads its next-token probability over 152k tokens, so no policy can learn in a
    few CPU steps; with its mass on 32 tokens, a length reward (words) is learnable in a handful.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from lwz.tiny import TINY_QWEN2_SHAPE, build_qwen2

    folder = build_qwen2(tmp_path_factory.mktemp("peaked") / "peaked-qwen2", seed=3, **TINY_QWEN2_SHAPE)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = [tokenizer.encode(t)[0] for t in PEAKED_WORDS + PEAKED_MARKS]
    state = load_file(str(folder / "model.safetensors"))
    head = state["lm_head.weight"]
    head.zero_()
    head[ids] = torch.randn(len(ids), head.shape[1], generator=torch.Generator().manual_seed(0)) * 0.5
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _write_config_folder(folder, config: dict) -> None:
    import json

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer"}))


@pytest.fixture
def paper_models(tmp_path, monkeypatch) -> Path:
    """$LWZ_MODELS with the paper recipe's model folders as config-only stand-ins (Qwen2.5-32B and a
    Qwen2.5-72B reward model), so `lwz run --dry-run` / `lwz sweep --dry-run` of it pass their file checks."""
    root = tmp_path / "models"
    qwen = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": 131072,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "vocab_size": 152064,
            "num_key_value_heads": 8}
    _write_config_folder(root / "Qwen2.5-32B", {**qwen, "num_hidden_layers": 64, "hidden_size": 5120,
                                               "num_attention_heads": 40, "intermediate_size": 27648})
    _write_config_folder(root / "writing-rm-72b", {**qwen, "architectures": ["Qwen2ForSequenceClassification"],
                                                  "num_labels": 1, "num_hidden_layers": 80, "hidden_size": 8192,
                                                  "num_attention_heads": 64, "intermediate_size": 29568})
    monkeypatch.setenv("LWZ_MODELS", str(root))
    return root
