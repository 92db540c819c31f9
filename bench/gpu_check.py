"""The GPU check: what lwz can verify on a lent GPU with torch and megatron-core alone (no vLLM, no TE).

    python bench/gpu_check.py [--device cuda|cpu] [--out DIR]

`cuda` runs the paper's shapes on one GPU in a few minutes; `cpu` runs the same checks on the tiny
shape, which CI runs (tests/multiproc/test_gpu_check.py) so that the script cannot rot while no GPU is lent. It
prints one table (also DIR/gpu_check.md) and exits non-zero when a check fails.

1. attention: lwz's SdpaAttention forward and backward (cuda: 15,360 tokens, 40 query / 8 KV heads, head
   dim 128, bf16, the flash backend only) and its peak memory against one s x s score matrix.
2. actor memory: what the actor allocates (weights, fp32 gradient buffers, the optimizer's fp32 main
   weights and Adam states, counted tensor by tensor) against the plan's static figure; on cuda also the
   allocator after build and its peak through one update of 2 x (1k + 14k) tokens against the plan's
   update phase (a random Qwen2.5-1.5B-shaped model).
3. phase order: two steps of the loop's phases (rollout, reward, update, sync, save) with an engine
   stand-in that holds on the device what the plan gives the rollout engine and reports to the GPU's
   rules as VllmEngine does; on cuda the allocator's peak inside sync and inside save against the plan's.
4. resume: a checkpoint after two updates loaded back into the actor; the next update's loss and
   gradient norm against the uninterrupted run's (1e-5 relative in fp32, 2e-3 in bf16).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {
    "cuda": {"model": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                       "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
                       "tie_word_embeddings": True},  # Qwen2.5-1.5B
             "dtype": "bf16", "prompt": 1024, "response": 14336, "attention": (15360, 40, 8, 128)},
    "cpu": {"model": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 151936,
                      "tie_word_embeddings": False},  # the tiny recipe's
            "dtype": "fp32", "prompt": 32, "response": 96, "attention": (512, 4, 2, 32)},
}
GIB = 1 << 30


def random_qwen2(folder: Path, shape: dict, dtype: torch.dtype, device: str) -> Path:
    """An HF Qwen2 folder (config.json, model.safetensors) of random weights: no tokenizer, nothing downloaded."""
    from safetensors.torch import save_file

    from lwz.actor.convert import hf_weight_shapes
    from lwz.actor.model import arch_from_hf_config

    config = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu",
              "max_position_embeddings": 32768, "rope_theta": 1e6, "rms_norm_eps": 1e-6, "initializer_range": 0.02,
              "head_dim": shape["hidden_size"] // shape["num_attention_heads"], **shape}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    generator = torch.Generator(device).manual_seed(0)
    tensors = {name: (torch.randn(size, generator=generator, device=device) * 0.02).to(dtype).cpu()
               for name, size in hf_weight_shapes(arch_from_hf_config(config)).items()}
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def write_recipe(work: Path, model: Path, device: str, shape: dict) -> Path:
    longest = shape["prompt"] + shape["response"]
    recipe = work / "gpu_check.yaml"
    recipe.write_text(json.dumps({
        "name": "gpu_check", "model": {"path": str(model), "dtype": shape["dtype"]},
        "actor": {"micro_batch_tokens": longest, "recompute": "full" if device == "cuda" else "none",
                  "lr": 1e-5, "vocab_chunk_tokens": 2048 if device == "cuda" else 64},
        "rollout": {"group_size": 2, "max_prompt_tokens": shape["prompt"], "max_tokens": shape["response"],
                    "gpu_memory_utilization": 0.3},
        "rewards": {"terms": [{"name": "length"}]},
        "schedule": {"steps": 2, "prompts_per_step": 1, "save_every": 1},
        "cluster": {"device": "gpu" if device == "cuda" else "cpu", "nodes": 1, "gpus_per_node": 1,
                    "gpu_memory_gib": 80},
        "logging": {"wandb": {"mode": "disabled"}}}))
    return recipe


def make_batch(shape: dict, vocab: int, seed: int):
    """Two sequences of (prompt + response) random tokens, advantages +1 and -0.5."""
    from lwz.batch import RolloutBatch

    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, vocab, (shape["prompt"],), generator=g).tolist() for _ in range(2)]
    responses = [torch.randint(0, vocab, (shape["response"],), generator=g).tolist() for _ in range(2)]
    return RolloutBatch(prompt_index=[0, 0], group=[0, 0], samples=[{"prompt": "", "length_range": [0, 0]}] * 2,
                        prompt_ids=prompts, response_ids=responses, texts=["", ""], truncated=[False, False],
                        rollout_logprobs=[[], []], advantages=[1.0, -0.5])


class EngineStandIn:
    """The rollout engine's place on the GPU without vLLM (which cannot travel to the GPU machines): it holds
    what the plan gives the engine (`weights` while its weights are awake, the rest of `budget` while its KV
    cache is), reports every move to the GPU's rules as VllmEngine does, consumes the weight sync and
    "generates" the fixed batch. A stand-in for a thing that cannot exist there, not for lwz's code."""

    def __init__(self, weights: int, budget: int, device: torch.device):
        from lwz.runtime.gpu_rules import gpu_rules

        self.rules, self.device = gpu_rules(), device
        self.sizes = {"weights": weights, "kv_cache": max(budget - weights, 0)}
        self.held: dict[str, torch.Tensor] = {}
        self.rules.engine_building(id(self), "rollout", loaded=False)
        self.sleep(level=2)

    def _hold(self, part: str, on: bool) -> None:
        if on:
            self.held[part] = torch.empty(self.sizes[part], dtype=torch.uint8, device=self.device)
        else:
            self.held.pop(part, None)

    def sleep(self, level: int) -> None:
        self._hold("weights", False)
        self._hold("kv_cache", False)
        self.rules.engine_slept(id(self))

    def wake_weights(self, phase: str = "sync") -> None:
        self.rules.weights_woken(id(self), phase)
        self._hold("weights", True)

    def wake_kv_cache(self, phase: str = "sync") -> None:
        self.rules.kv_cache_woken(id(self), phase)
        self._hold("kv_cache", True)

    def load_weights(self, named: Iterator) -> None:
        self.rules.before_weight_load(id(self), "sync")
        for _ in named:
            pass
        self.rules.weights_loaded(id(self))

    def reset_prefix_cache(self) -> None:
        pass

    def generate(self, batch):
        self.rules.before_generate(id(self), "rollout")
        return batch


def peak_during(device: torch.device, work: Callable[[], object]) -> tuple[object, int | None]:
    """`work()` and the allocator's peak bytes during it (None on CPU, which has no allocator to ask)."""
    if device.type != "cuda":
        return work(), None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    result = work()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated()


def check_attention(device: torch.device, shape: dict) -> str:
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.enums import AttnMaskType
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lwz.actor.sdpa_attention import SdpaAttention

    seq, heads, kv_heads, head_dim = shape["attention"]
    dtype = torch.bfloat16 if shape["dtype"] == "bf16" else torch.float32
    config = TransformerConfig(num_layers=1, hidden_size=heads * head_dim, num_attention_heads=heads,
                               num_query_groups=kv_heads, kv_channels=head_dim, attention_dropout=0.0,
                               use_cpu_initialization=True)
    attention = SdpaAttention(config, 1, AttnMaskType.causal, "self")
    g = torch.Generator(device.type).manual_seed(0)
    q = torch.randn(seq, 1, heads, head_dim, generator=g, device=device, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(seq, 1, kv_heads, head_dim, generator=g, device=device, dtype=dtype, requires_grad=True)
            for _ in range(2))
    backends = [SDPBackend.FLASH_ATTENTION] if device.type == "cuda" else [SDPBackend.MATH]

    def run() -> float:
        with sdpa_kernel(backends):
            out = attention(q, k, v, None)
            out.float().square().mean().backward()
        return float(out.float().abs().mean())

    started = time.perf_counter()
    _, peak = peak_during(device, run)
    seconds = time.perf_counter() - started
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v)), "non-finite gradients"
    scores = heads * seq * seq * torch.tensor([], dtype=dtype).element_size()  # one s x s matrix per head
    name = "flash" if device.type == "cuda" else "math"
    if peak is None:
        return f"{seq} tokens, {heads}/{kv_heads} heads x {head_dim}, {name}: fwd+bwd {seconds:.2f} s"
    assert peak < scores / 4, f"peak {peak / GIB:.2f} GiB: an s x s score matrix ({scores / GIB:.1f} GiB) was built"
    return (f"{seq} tokens, {heads}/{kv_heads} heads x {head_dim}, {name}: fwd+bwd {seconds:.2f} s, peak "
            f"{peak / GIB:.2f} GiB (scores would be {scores / GIB:.1f})")


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def allocated_by_actor(policy) -> dict[str, int]:
    """Bytes of the actor's weights, fp32 gradient buffers and optimizer tensors, counted tensor by tensor (an
    optimizer tensor that is a view of a weight or gradient buffer, as fp32 main weights are, counts once)."""
    model, optimizer = policy.model, policy.optimizer
    buffers = model.buffers + model.expert_parallel_buffers
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *(b.grad_data for b in buffers)]}
    states: dict[tuple[int, int], torch.Tensor] = {}
    for part in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = part.optimizer
        tensors = [p for group in inner.param_groups for p in group["params"]]   # fp32 main weights (shards)
        tensors += [t for state in inner.state.values() for t in state.values() if torch.is_tensor(t) and t.dim()]
        states.update({(t.data_ptr(), t.numel()): t for t in tensors if t.untyped_storage().data_ptr() not in owned})
    return {"weights": tensor_bytes(model.parameters()), "grads": tensor_bytes(b.grad_data for b in buffers),
            "optimizer": tensor_bytes(states.values())}


def check_actor_memory(policy, plan, batch, device: torch.device) -> str:
    stage = plan.actor_memory[0]
    before = torch.cuda.memory_allocated() if device.type == "cuda" else None
    update, peak = peak_during(device, lambda: policy.update(batch))
    counted = allocated_by_actor(policy)
    planned = {"weights": stage.weights, "grads": stage.grads, "optimizer": stage.optimizer}
    ratios = {k: counted[k] / planned[k] for k in planned}
    assert all(0.97 <= r <= 1.05 for r in ratios.values()), f"counted / planned {ratios}"
    assert math.isfinite(update["loss"]) and update["grad_norm"] > 0, update
    figures = ", ".join(f"{k} {counted[k] / GIB:.2f}/{planned[k] / GIB:.2f}" for k in planned)
    if peak is None:
        return f"counted/plan GiB: {figures}"
    update_plan = plan.phase_peak["update"] - plan.card.overhead
    assert peak <= update_plan * 1.10, f"update peak {peak / GIB:.2f} GiB over the plan's {update_plan / GIB:.2f}"
    return (f"counted/plan GiB: {figures}; allocated after build {before / GIB:.2f}, update peak {peak / GIB:.2f} "
            f"of the plan's {update_plan / GIB:.2f} (2 x {batch.response_ids[0].__len__()} response tokens)")


def check_phase_order(policy, plan, engine: EngineStandIn, batch, work: Path, device: torch.device) -> str:
    from lwz.actor.checkpoint import checkpoint_folder, prune_checkpoints
    from lwz.rollout.weight_sync import sync_sleeping_engine

    peaks: dict[str, list[int | None]] = {"sync": [], "save": []}
    sync_sleeping_engine(policy.hf_weights, engine)   # the first sync fills the engine (dummy weights)
    for step in range(2):
        generated = engine.generate(batch)                            # rollout
        engine.sleep(level=2)
        update = policy.update(generated)                              # reward (fixed), update
        stats, peak = peak_during(device, lambda: sync_sleeping_engine(policy.hf_weights, engine))
        peaks["sync"].append(peak)
        engine.sleep(level=1)                                          # the checkpoint, the engine asleep
        _, peak = peak_during(device, lambda: policy.save(checkpoint_folder(work / "ckpt", step + 1), {"step": step + 1}))
        peaks["save"].append(peak)
        prune_checkpoints(work / "ckpt", keep=1)   # a 1.5B checkpoint is ~21 GB: the GPU machine's disk is 64
        engine.wake_weights("save")
        engine.wake_kv_cache("save")
        assert math.isfinite(update["loss"]) and stats.tensors > 0, (update, stats)
    engine.sleep(level=2)
    shutil.rmtree(work / "ckpt")
    if device.type != "cuda":
        return "2 steps: rollout, reward, update, sync, save in the rules' order"
    figures = []
    for phase, measured in peaks.items():
        planned = plan.phase_peak[phase] - plan.card.overhead
        assert max(measured) <= planned * 1.10, f"{phase} peak {max(measured) / GIB:.2f} GiB over {planned / GIB:.2f}"
        figures.append(f"{phase} peak {max(measured) / GIB:.2f} of the plan's {planned / GIB:.2f}")
    return "2 steps in the rules' order; " + ", ".join(figures) + " GiB"


def check_resume(policy, batch, work: Path, dtype: str) -> str:
    from lwz.actor.checkpoint import checkpoint_folder

    for _ in range(2):
        policy.update(batch)
    folder = checkpoint_folder(work / "resume", 2)
    policy.save(folder, {"step": 2})
    straight = policy.update(batch)
    policy.load(folder)
    resumed = policy.update(batch)
    tolerance = 2e-3 if dtype == "bf16" else 1e-5
    for key in ("loss", "grad_norm"):
        gap = abs(resumed[key] - straight[key]) / max(abs(straight[key]), 1e-12)
        assert gap <= tolerance, f"{key}: resumed {resumed[key]} vs {straight[key]} (relative {gap:.1e})"
    return (f"loss {resumed['loss']:.6f} vs {straight['loss']:.6f}, grad norm {resumed['grad_norm']:.5f} vs "
            f"{straight['grad_norm']:.5f} (relative tolerance {tolerance:g})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.md")
    args = parser.parse_args()
    os.environ["LWZ_DEVICE"] = args.device
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from lwz.actor.policy import Policy
    from lwz.launch.env import DistEnv
    from lwz.plan.resolve import resolve
    from lwz.recipe.load import load_recipe
    from lwz.runtime import init_distributed

    shape = SHAPES[args.device]
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (the tiny shape; CI)"
    rows: list[str] = []

    def check(name: str, run: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            result, figures = "pass", run()
        except Exception as e:  # a failed check is a row of the table, the next one still runs
            traceback.print_exc()
            result, figures = "FAIL", f"{type(e).__name__}: {e}"[:300]
        rows.append(f"| {name} | {result} | {figures} | {time.perf_counter() - started:.0f} s |")
        print(rows[-1], flush=True)

    with tempfile.TemporaryDirectory(prefix="lwz-gpu-check-") as tmp, socket.socket() as s:
        work = Path(tmp)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        init_distributed(1, 1, seed=0, device=args.device, env=DistEnv(master_addr="127.0.0.1", master_port=port))
        check("attention (SdpaAttention)", lambda: check_attention(device, shape))
        dtype = torch.bfloat16 if shape["dtype"] == "bf16" else torch.float32
        model = random_qwen2(work / "model", shape["model"], dtype, args.device)
        recipe = load_recipe(write_recipe(work, model, args.device, shape))
        plan = resolve(recipe)
        policy = Policy(recipe, plan)
        batch = make_batch(shape, shape["model"]["vocab_size"], seed=7)
        check("actor memory vs the plan", lambda: check_actor_memory(policy, plan, batch, device))
        rollout = plan.engine("rollout").memory
        engine = EngineStandIn(rollout.weights, rollout.budget, device)
        check("phase order, 2 steps (engine stand-in)", lambda: check_phase_order(policy, plan, engine, batch, work, device))
        check("resume from a checkpoint", lambda: check_resume(policy, batch, work, shape["dtype"]))

    table = "\n".join([f"GPU check on {card} ({time.strftime('%Y-%m-%d')})", "",
                       "| check | result | figures | time |", "|---|---|---|---|", *rows])
    print("\n" + table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.md").write_text(table + "\n")
    return 1 if any("| FAIL |" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
