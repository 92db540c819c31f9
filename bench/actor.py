"""Actor update throughput: the megatron-core Policy vs HF transformers + torch AdamW, side by side.

Both take the same GRPO steps (same sequences, micro-batches, loss, clipping, optimizer steps) on
the same model, after warm-up; tokens/s counts prompt + response tokens per optimizer step.
On a GPU with `--model 0.5b` it also prints MFU (6 x params x tokens / time / peak FLOP/s).

    OMP_NUM_THREADS=1 python bench/actor.py                        # tiny Qwen2 on CPU
    python bench/actor.py --device cuda --model 0.5b --dtype bf16  # ~0.5B Qwen2 on a GPU
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

import torch

from lwz.algo.grpo import LossSettings, policy_loss
from lwz.batch import RolloutBatch
from lwz.launch.ports import free_port_block

log = logging.getLogger("bench.actor")

REPO = Path(__file__).resolve().parents[1]
QWEN25_05B = dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
                  tie_word_embeddings=True)  # fmt: skip


def model_path(name: str, workdir: Path, dtype: str) -> Path:
    from lwz.models_local.tiny import build_qwen2, tiny_qwen2_path

    if name == "tiny":
        return tiny_qwen2_path()
    return build_qwen2(workdir / "qwen2-0.5b", **QWEN25_05B, dtype="bfloat16" if dtype == "bf16" else "float32")


def make_batch(count: int, prompt_len: int, response_len: int, vocab: int) -> RolloutBatch:
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(0, vocab, (n,), generator=g).tolist()  # noqa: E731
    return RolloutBatch(prompt_index=list(range(count)), group=[0] * count, samples=[{}] * count,
                        prompt_ids=[ids(prompt_len) for _ in range(count)],
                        response_ids=[ids(response_len) for _ in range(count)], texts=[""] * count,
                        truncated=[False] * count, rollout_logprobs=[[] for _ in range(count)],
                        advantages=[1.0 if i % 2 else -1.0 for i in range(count)])  # fmt: skip


def make_recipe(path: Path, args):
    from lwz.actor.convert import read_hf_config
    from lwz.recipe.load import load_recipe

    cfg = read_hf_config(path)
    arch = dict(num_layers=cfg["num_hidden_layers"], hidden_size=cfg["hidden_size"],
                num_attention_heads=cfg["num_attention_heads"], num_key_value_heads=cfg["num_key_value_heads"],
                head_dim=cfg["head_dim"], intermediate_size=cfg["intermediate_size"],
                tie_word_embeddings=str(cfg["tie_word_embeddings"]).lower())  # fmt: skip
    seq = args.prompt_len + args.response_len
    return load_recipe(REPO / "recipes" / "tiny.yaml", [
        f"model.path={path}", f"model.dtype={args.dtype}", *(f"model.arch.{k}={v}" for k, v in arch.items()),
        f"actor.micro_batch_tokens={seq * args.micro_seqs}", f"rollout.max_prompt_tokens={args.prompt_len}",
        f"rollout.max_tokens={args.response_len}", "actor.lr=1e-6", "actor.grad_clip=1.0",
        f"cluster.device={'gpu' if args.device == 'cuda' else 'cpu'}", "cluster.gpus_per_node=1",
        f"schedule.steps={args.steps + args.warmup}", "rewards.terms=[{name: length}]",
    ])  # fmt: skip


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_megatron(recipe, batch: RolloutBatch, args) -> float:
    """Seconds per optimizer step of the megatron Policy."""
    from lwz.actor.policy import Policy
    from lwz.plan.resolve import resolve

    policy = Policy(recipe, resolve(recipe))
    batch.old_logprobs = policy.compute_logprobs(batch)
    for _ in range(args.warmup):
        policy.update(batch)
    sync(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        policy.update(batch)
    sync(args.device)
    seconds = (time.perf_counter() - start) / args.steps
    del policy
    return seconds


def time_hf(recipe, batch: RolloutBatch, args) -> float:
    """Seconds per optimizer step of HF transformers + torch AdamW doing the same GRPO step."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(recipe.model.path, dtype=dtype).to(args.device).train()
    actor = recipe.actor
    optimizer = torch.optim.AdamW(model.parameters(), lr=actor.lr, betas=(actor.adam_beta1, actor.adam_beta2),
                                  eps=actor.adam_eps, weight_decay=actor.weight_decay)  # fmt: skip
    groups = batch.micro_batches(actor.micro_batch_tokens)
    micro = [batch.padded(idx) for idx in groups]
    old = [p.scatter([batch.old_logprobs[i] for i in idx]).to(args.device) for p, idx in zip(micro, groups)]
    adv = [torch.tensor([batch.advantages[i] for i in idx], device=args.device) for idx in groups]
    settings = LossSettings(recipe.algo.clip_low, recipe.algo.clip_high, loss_agg=recipe.algo.loss_agg)
    normalizer = float(sum(len(r) for r in batch.response_ids))

    def step() -> None:
        for k, padded in enumerate(micro):
            tokens = padded.tokens.to(args.device)
            logprobs = torch.log_softmax(model(tokens).logits[:, :-1].float(), -1)
            logprobs = logprobs.gather(-1, tokens[:, 1:, None])[..., 0]
            loss, _ = policy_loss(logprobs, old[k], adv[k], padded.response_mask.to(args.device), settings,
                                  normalizer=normalizer)  # fmt: skip
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), actor.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    sync(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(args.device)
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", choices=("tiny", "0.5b"), default="tiny")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--sequences", type=int, default=8, help="sequences per optimizer step")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=192)
    parser.add_argument("--micro-seqs", type=int, default=4, help="sequences per micro-batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="peak FLOP/s for MFU (H100 bf16 dense)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from lwz.launch.env import DistEnv
    from lwz.runtime import init_distributed

    with tempfile.TemporaryDirectory() as workdir:
        path = model_path(args.model, Path(workdir), args.dtype)
        recipe = make_recipe(path, args)
        init_distributed(device=args.device, seed=0, env=DistEnv(master_addr="127.0.0.1", master_port=free_port_block()))
        batch = make_batch(args.sequences, args.prompt_len, args.response_len, 151643)
        tokens = args.sequences * (args.prompt_len + args.response_len)
        megatron_s = time_megatron(recipe, batch, args)
        if args.device == "cuda":
            torch.cuda.empty_cache()
        hf_s = time_hf(recipe, batch, args)
        params = count_params(path)
    print(f"model {args.model} ({params / 1e6:.1f}M params, {args.dtype}) on {args.device}: "
          f"{args.sequences} x {args.prompt_len}+{args.response_len} tokens per step, {args.steps} timed steps")
    print(f"megatron-core update: {tokens / megatron_s:,.0f} tokens/s ({megatron_s * 1e3:.1f} ms/step)")
    print(f"HF + torch AdamW:     {tokens / hf_s:,.0f} tokens/s ({hf_s * 1e3:.1f} ms/step)")
    print(f"ratio (megatron / HF): {hf_s / megatron_s:.2f}")
    if args.device == "cuda" and args.model == "0.5b":
        for name, seconds in (("megatron-core", megatron_s), ("HF", hf_s)):
            print(f"MFU {name}: {6 * params * tokens / seconds / args.peak_flops:.1%} of {args.peak_flops:.3g} FLOP/s")


def count_params(path: Path) -> int:
    """Parameters in the HF checkpoint (a tied output layer counted once)."""
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", framework="pt") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())


if __name__ == "__main__":
    main()
