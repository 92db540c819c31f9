"""The megatron actor equals transformers: logits at TP1, TP2, PP2, TP2xPP2; exact HF round trip;
megatron-core's CPU shims in a fresh process.

Cases: the tiny Qwen2 (qkv bias, untied, GQA) in fp32 and bf16; a Qwen2 with tied embeddings
and a vocabulary that TP=2 must pad; a Llama (no biases, Llama-3 RoPE scaling). The last two
use a larger init so that a wrong RoPE or head order moves the logits far beyond the tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from lwz.actor.convert import hf_weight_shapes, read_hf_config
from lwz.actor.model import arch_from_hf_config, padded_vocab_size
from lwz.errors import LwzError
from lwz.models_local.tiny import build_qwen2

SCRIPT = Path(__file__).parents[1] / "dist" / "actor_parity.py"
ALL_LAYOUTS = [(1, 1), (2, 1), (1, 2), (2, 2)]
LAYOUTS = {
    "tiny_qwen2": ALL_LAYOUTS,
    "tied_odd_vocab": [(2, 2)],
    "llama": [(2, 1), (1, 2)],
    "tiny_bf16": [(2, 2)],
}
TOLERANCE = {
    "tiny_bf16": 3e-2
}  # bf16 weights and activations against the fp32 reference; else 1e-4
CASE_LAYOUTS = [(case, tp, pp) for case, layouts in LAYOUTS.items() for tp, pp in layouts]


def build_llama(folder: Path) -> Path:
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=0.2,
        max_position_embeddings=16384,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 1e6,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def parity_run(tiny_qwen2, module_folder):
    out = module_folder("parity")
    tied = build_qwen2(
        out / "tied",
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=96,
        vocab_size=1001,
        tie_word_embeddings=True,
        init_std=0.1,
    )
    dirs = {
        "tiny_qwen2": tiny_qwen2,
        "tied_odd_vocab": tied,
        "llama": build_llama(out / "llama"),
        "tiny_bf16": tiny_qwen2,
    }
    cases = [
        {
            "name": name,
            "hf_dir": str(dirs[name]),
            "layouts": layouts,
            "dtype": "bfloat16" if name == "tiny_bf16" else "float32",
            "export": str(out / "export") if name == "tiny_qwen2" else None,
        }
        for name, layouts in LAYOUTS.items()
    ]
    (out / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(SCRIPT), str(out / "cases.json"), str(out / "results.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "results.json").read_text()), dirs, out / "export"


def _results(parity_run, case, tp, pp):
    results = [r for r in parity_run[0] if (r["case"], r["tp"], r["pp"]) == (case, tp, pp)]
    assert len(results) == 4  # every rank of the 4-process job ran this layout
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case,tp,pp", CASE_LAYOUTS)
def test_logits_match_transformers(parity_run, case, tp, pp):
    results = _results(parity_run, case, tp, pp)
    last = [r for r in results if r["last_stage"]]
    assert len(last) == (4 if pp == 1 else 2)
    assert all(r["max_abs_diff"] is None for r in results if not r["last_stage"])
    vocab = read_hf_config(parity_run[1][case])["vocab_size"]
    for r in last:
        assert r["logits_shape"] == [2, 24, vocab]
        assert r["max_abs_diff"] < TOLERANCE.get(case, 1e-4), r


@pytest.mark.slow
@pytest.mark.parametrize("case,tp,pp", CASE_LAYOUTS)
def test_hf_megatron_hf_round_trip_is_exact(parity_run, case, tp, pp):
    hf_dir = parity_run[1][case]
    expected_names = list(hf_weight_shapes(arch_from_hf_config(read_hf_config(hf_dir))))
    assert sorted(expected_names) == sorted(load_file(hf_dir / "model.safetensors"))
    for r in _results(parity_run, case, tp, pp):
        assert r["names"] == expected_names, f"rank {r['rank']} saw another sequence"
        assert r["unequal"] == [], f"rank {r['rank']}: tensors differ after the round trip"


@pytest.mark.slow
def test_exported_folder_equals_the_source(parity_run, tiny_qwen2):
    export = parity_run[2]
    assert read_hf_config(export) == read_hf_config(tiny_qwen2)
    original, exported = (
        load_file(tiny_qwen2 / "model.safetensors"),
        load_file(export / "model.safetensors"),
    )
    assert original.keys() == exported.keys()
    assert all(torch.equal(original[k], exported[k]) for k in original)
    assert (export / "tokenizer.json").read_bytes() == (tiny_qwen2 / "tokenizer.json").read_bytes()
    assert not [p for p in export.parent.iterdir() if p.name.startswith(".")], (
        "temporary folder left behind"
    )


def test_padded_vocab_size():
    assert padded_vocab_size(1001, 2) == 1002
    assert padded_vocab_size(151936, 8) == 151936
    assert padded_vocab_size(7, 1) == 7


@pytest.mark.slow
def test_cpu_shims_in_a_fresh_process():
    """Device rewriting, CUDA type strings, no-op sync, CPU RNG tracker, megatron grad clipping."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):
        env.pop(key, None)
    script = Path(__file__).parents[1] / "dist" / "cpu_shims_check.py"
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"


QWEN25_CONFIG = {
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
    "hidden_act": "silu",
    "use_sliding_window": False,
}


def test_arch_reads_qwen25_and_llama_configs():
    arch = arch_from_hf_config(QWEN25_CONFIG)  # the old layout: top-level rope_theta
    assert (arch.head_dim, arch.heads_per_group, arch.rope_theta) == (64, 7, 1e6)
    assert arch.qkv_bias and arch.tie_word_embeddings and arch.rope_scaling_factor is None
    llama = {**QWEN25_CONFIG, "model_type": "llama", "tie_word_embeddings": False}
    llama["rope_scaling"] = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    arch = arch_from_hf_config(llama)
    assert not arch.qkv_bias and arch.rope_scaling_factor == 32.0
    assert len(hf_weight_shapes(arch)) == 2 + 24 * 9 + 1


@pytest.mark.parametrize(
    "change,key",
    [
        ({"model_type": "gpt2"}, "model_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_parameters"),
        ({"model_type": "llama", "attention_bias": True}, "attention_bias"),
    ],
)
def test_arch_rejects_what_megatron_would_compute_differently(change, key):
    with pytest.raises(LwzError) as error:
        arch_from_hf_config({**QWEN25_CONFIG, **change})
    assert error.value.key == key and error.value.where == "config.json"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_actor_on_one_gpu(tmp_path):
    """NCCL, model on the GPU (TE spec when installed): logits vs transformers, exact round trip."""
    script = Path(__file__).parents[1] / "dist" / "gpu_actor_check.py"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["device"] == "cuda:0" and results["backend"] == "nccl"
    fp32, bf16 = results["torch.float32"], results["torch.bfloat16"]
    print(f"\nlogits max |diff| fp32 {fp32['max_abs_diff']:.1e}, bf16 {bf16['max_abs_diff']:.1e} (HF's own bf16 "
          f"{results['hf_bf16_max_abs_diff']:.1e}); tempered logprobs {results['tempered']['logprob_max_abs_diff']:.1e}, "
          f"grad {results['tempered']['grad_max_abs_diff']:.1e}; chunked projection (rel) "
          f"{max(results['projected'].values()):.1e}; TE {results['te']}")
    assert fp32["param_device"] == bf16["param_device"] == "cuda:0"
    assert fp32["max_abs_diff"] < 1e-4, fp32
    # bf16 rounding: no worse than twice transformers' own bf16 error against its fp32 logits.
    assert bf16["max_abs_diff"] < 2 * results["hf_bf16_max_abs_diff"], results
    assert fp32["unequal"] == bf16["unequal"] == []
    tempered = results["tempered"]
    assert tempered["logprob_max_abs_diff"] < 5e-4 and tempered["grad_max_abs_diff"] < 1e-5, tempered
    assert max(results["projected"].values()) < 1e-5, results["projected"]   # TF32 matmuls off by default
