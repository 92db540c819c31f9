"""The actor on one GPU (NCCL, no shims): logits vs transformers in fp32 and bf16, exact round trip of
the weight gather that feeds the engines, tempered (T = 0.7) logprobs and their gradient against
PyTorch's log_softmax(logits / T), and the chunked vocabulary projection against the whole logits.

Usage: python tests/dist/gpu_actor_check.py WORK_DIR  (prints one JSON line of results)
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import torch


def build_hf(folder: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.1,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


def main(work: Path) -> None:
    from megatron.core import parallel_state
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lwz.actor.convert import iter_hf_weights, load_hf_into_megatron, read_hf_config
    from lwz.actor.logprobs import logprobs_and_entropy, projected_logprobs_and_entropy
    from lwz.actor.model import build_gpt_model, forward_logits, uses_transformer_engine
    from lwz.runtime import destroy_distributed, init_distributed

    hf_dir = build_hf(work / "hf")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    runtime = init_distributed(1, 1, seed=0)
    config = read_hf_config(hf_dir)
    input_ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(7))
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).cuda()
    with torch.no_grad():
        expected = hf(input_ids.cuda()).logits.float()
        hf_bf16_error = (hf.bfloat16()(input_ids.cuda()).logits.float() - expected).abs().max()
    results = {
        "device": str(runtime.device),
        "backend": runtime.backend,
        "te": uses_transformer_engine(),
        "hf_bf16_max_abs_diff": hf_bf16_error.item(),
    }
    for dtype in (torch.float32, torch.bfloat16):
        model = build_gpt_model(config, dtype=dtype)
        load_hf_into_megatron(model, hf_dir)
        logits = forward_logits(model, input_ids)
        reference = {k: v.to(dtype) for k, v in load_file(hf_dir / "model.safetensors").items()}
        unequal = [
            n for n, t in iter_hf_weights(model, config) if not torch.equal(t.cpu(), reference[n])
        ]
        results[str(dtype)] = {
            "param_device": str(next(model.parameters()).device),
            "max_abs_diff": (logits - expected).abs().max().item(),
            "unequal": unequal,
        }
        if dtype == torch.float32:
            results["tempered"] = tempered_logprobs(logprobs_and_entropy, logits, expected, input_ids.cuda())
    results["projected"] = projected(logprobs_and_entropy, projected_logprobs_and_entropy)
    assert parallel_state.model_parallel_is_initialized()
    destroy_distributed()
    print(json.dumps(results))


def tempered_logprobs(logprobs_and_entropy, logits, expected, input_ids, temperature: float = 0.7) -> dict:
    """Max |actor - reference| of tempered logprobs (megatron logits vs transformers'), and of the
    gradient of the summed logprobs through lwz's autograd function vs PyTorch's."""
    labels = input_ids[:, 1:]
    reference = torch.log_softmax(expected[:, :-1] / temperature, -1).gather(-1, labels[..., None])[..., 0]
    ours, _ = logprobs_and_entropy(logits[:, :-1], labels, logits.shape[-1], temperature)
    leaf = expected[:, :-1].clone().requires_grad_(True)
    logprobs_and_entropy(leaf, labels, leaf.shape[-1], temperature)[0].sum().backward()
    torch_leaf = expected[:, :-1].clone().requires_grad_(True)
    torch.log_softmax(torch_leaf / temperature, -1).gather(-1, labels[..., None]).sum().backward()
    return {"logprob_max_abs_diff": (ours - reference).abs().max().item(),
            "grad_max_abs_diff": (leaf.grad - torch_leaf.grad).abs().max().item()}


def projected(logprobs_and_entropy, projected_logprobs_and_entropy, temperature: float = 0.7) -> dict:
    """Max relative |chunked - whole| of logprobs and of the hidden and weight gradients (fp32, 7-row chunks)."""
    g = torch.Generator(device="cuda").manual_seed(5)
    hidden = torch.randn(50, 64, device="cuda", generator=g).requires_grad_(True)
    weight = (torch.randn(1000, 64, device="cuda", generator=g) * 0.1).requires_grad_(True)
    labels = torch.randint(0, 1000, (50,), device="cuda", generator=g)
    outputs = []
    for whole in (True, False):
        hidden.grad = weight.grad = None
        if whole:
            logprobs = logprobs_and_entropy(hidden @ weight.t(), labels, 1000, temperature)[0]
        else:
            logprobs = projected_logprobs_and_entropy(hidden, weight, labels, 1000, temperature, chunk=7)[0]
        logprobs.sum().backward()
        outputs.append((logprobs.detach(), hidden.grad.clone(), weight.grad.clone()))

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()

    (lp, gh, gw), (lp2, gh2, gw2) = outputs
    return {"logprob_rel": rel(lp2, lp), "hidden_grad_rel": rel(gh2, gh), "weight_grad_rel": rel(gw2, gw)}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
