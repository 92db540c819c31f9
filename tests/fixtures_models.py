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
