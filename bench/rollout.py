"""Rollout throughput: lwz's engine vs bare vLLM vs HF `generate`, side by side on one model and prompt set.

    OMP_NUM_THREADS=1 python bench/rollout.py [--model DIR] [--prompts 8] [--group 4] [--max-tokens 256]

Prints generated tokens/s of each and the ratios lwz/vLLM and lwz/HF. Every engine samples the same
number of tokens (ignore_eos, no stop strings) so the work is equal.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PROMPTS = ["Write a story about a lighthouse keeper.", "写一篇关于秋天的散文。", "Describe a city at night.",
           "Explain how bridges are built.", "Write a letter to a friend abroad.", "写一首关于大海的诗。",
           "Describe the taste of coffee.", "Write a speech for a graduation."]


def bench_lwz(model: str, prompts: list[str], group: int, max_tokens: int, device: str, dtype: str) -> float:
    from lwz.engines.vllm_engine import SamplingSettings, VllmEngine

    engine = VllmEngine(model, device=device, dtype=dtype, max_model_len=1024 + max_tokens)
    engine.llm.llm_engine.model_config.hf_config.eos_token_id = None  # equal work: no early EOS
    settings = SamplingSettings(group, 1.0, 1.0, max_tokens)
    engine.generate(prompts[:2], SamplingSettings(1, 1.0, 1.0, 8), seed=0)     # warm-up
    start = time.perf_counter()
    out = engine.generate(prompts, settings, seed=1)
    seconds = time.perf_counter() - start
    del engine
    return sum(len(c.response_ids) for g in out for c in g) / seconds


def bench_vllm(model: str, prompts: list[str], group: int, max_tokens: int, device: str, dtype: str) -> float:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype={"fp32": "float32", "bf16": "bfloat16"}[dtype], max_model_len=1024 + max_tokens,
              enable_prefix_caching=True, enforce_eager=device == "cpu", distributed_executor_backend="uni", seed=0)
    llm.generate(prompts[:2], SamplingParams(max_tokens=8), use_tqdm=False)
    params = SamplingParams(n=group, temperature=1.0, top_p=1.0, max_tokens=max_tokens, ignore_eos=True,
                            logprobs=0)
    start = time.perf_counter()
    out = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    del llm
    return sum(len(c.token_ids) for o in out for c in o.outputs) / seconds


def bench_hf(model: str, prompts: list[str], group: int, max_tokens: int, device: str, dtype: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, padding_side="left")
    torch_device = "cuda" if device == "gpu" else "cpu"
    hf = AutoModelForCausalLM.from_pretrained(model, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    hf = hf.to(torch_device).eval()
    batch = tok(prompts, return_tensors="pt", padding=True).to(torch_device)
    with torch.no_grad():
        hf.generate(**batch, max_new_tokens=4, do_sample=True)
        start = time.perf_counter()
        out = hf.generate(**batch, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=True,
                          temperature=1.0, top_p=1.0, num_return_sequences=group)
        seconds = time.perf_counter() - start
    return (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0] / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF folder (default: the tiny Qwen2)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    if args.model is None:
        from lwz.models_local.tiny import tiny_qwen2_path

        args.model = str(tiny_qwen2_path())
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    shape = (args.model, prompts, args.group, args.max_tokens, args.device, args.dtype)
    results = {"lwz": bench_lwz(*shape), "vllm": bench_vllm(*shape), "hf": bench_hf(*shape)}
    print(f"rollout: {args.prompts} prompts x {args.group} samples x {args.max_tokens} tokens, "
          f"{args.device} {args.dtype}, {os.path.basename(args.model.rstrip('/'))}")
    for name, value in results.items():
        print(f"  {name:<5} {value:10.0f} tokens/s")
    print(f"  lwz / bare vLLM = {results['lwz'] / results['vllm']:.2f}   lwz / HF generate = "
          f"{results['lwz'] / results['hf']:.2f}")


if __name__ == "__main__":
    main()
