"""Weight sync into a live vLLM engine: seconds per full sync and GB/s, by model and bucket size.

    OMP_NUM_THREADS=1 python bench/sync.py [--models tiny 0.5b] [--buckets 256 16] [--reps 3] [--device cpu]

One process, the loop's `push_weights` (every tensor, bucket by bucket, streamed into one
`VllmEngine.load_weights` call, then a prefix-cache reset), against the bare vLLM call it wraps
(`worker.reload_weights` on the whole state dict + `LLM.reset_prefix_cache`) on the same engine.
The pushed state dict is the model's own safetensors in the engine's dtype (on the engine's device
with `--device gpu`). The 0.5B model is a random Qwen2 of Qwen2.5-0.5B's
shape, built once into the lwz cache. Each bucket size gets one warm-up sync, then `--reps` timed ones.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch

from lwz.rollout.weight_sync import SyncStats, push_weights

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def model_folder(name: str) -> Path:
    """The tiny test model, or the random 0.5B Qwen2 (built into the cache on first use)."""
    from lwz.models_local.tiny import QWEN25_0_5B_SHAPE, build_qwen2, cache_dir, tiny_qwen2_path

    if name == "tiny":
        return tiny_qwen2_path()
    folder = cache_dir() / "models" / "bench-qwen2-0.5b"
    if not (folder / "config.json").is_file():
        print(f"building the random 0.5B Qwen2 into {folder} ...", flush=True)
        build_qwen2(folder, **QWEN25_0_5B_SHAPE, dtype="bfloat16")
    return folder


def load_state(folder: Path, dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors files, cast to `dtype`, on the engine's device."""
    from safetensors.torch import load_file

    target = "cuda" if device == "gpu" else "cpu"
    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update({k: v.to(target, dtype) for k, v in load_file(str(file)).items()})
    return state


def bare_vllm_sync(engine, state: dict[str, torch.Tensor]) -> float:
    """Seconds for vLLM's own reload of the whole state dict plus a prefix-cache reset."""
    start = time.perf_counter()
    engine.llm.llm_engine.model_executor.driver_worker.worker.reload_weights(weights_iterator=iter(state.items()))
    engine.llm.reset_prefix_cache()
    return time.perf_counter() - start


def bench_model(name: str, bucket_mib: list[int], reps: int, device: str, dtype: str) -> list[tuple]:
    """Rows (model, params, bucket MiB, seconds/sync, GB/s, buckets, bare vLLM seconds) for one engine."""
    from lwz.engines.vllm_engine import VllmEngine

    folder = model_folder(name)
    engine = VllmEngine(str(folder), device=device, dtype=dtype, max_model_len=256, gpu_memory_utilization=0.5)
    state = load_state(folder, DTYPES[dtype], device)
    params = sum(t.numel() for t in state.values())
    rows = []
    for mib in bucket_mib:
        push_weights(state.items(), engine, mib << 20)  # warm-up
        bare_vllm_sync(engine, state)
        runs: list[SyncStats] = []
        bare: list[float] = []
        for _ in range(reps):                     # alternate, so both see the same machine state
            runs.append(push_weights(state.items(), engine, mib << 20))
            bare.append(bare_vllm_sync(engine, state))
        seconds = statistics.median(s.seconds for s in runs)
        rows.append((name, params, mib, seconds, runs[0].bytes / 1e9 / seconds, runs[0].buckets,
                     statistics.median(bare)))
    del engine, state
    gc.collect()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=("tiny", "0.5b"), default=["tiny", "0.5b"])
    parser.add_argument("--buckets", nargs="+", type=int, default=[256, 16], help="bucket sizes in MiB")
    parser.add_argument("--reps", type=int, default=3, help="timed syncs per bucket size (median reported)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    args = parser.parse_args()
    rows = [row for name in args.models for row in bench_model(name, args.buckets, args.reps, args.device, args.dtype)]
    print(f"weight sync: {args.device} {args.dtype}, median of {args.reps} after a warm-up")
    print(f"  {'model':<6} {'params':>8} {'bucket':>8} {'buckets':>7} {'s/sync':>8} {'GB/s':>6} {'bare s':>7} {'bare/lwz':>8}")
    for name, params, mib, seconds, gbps, count, bare in rows:
        print(f"  {name:<6} {params / 1e6:>7.1f}M {mib:>5} MiB {count:>7} {seconds:>8.3f} {gbps:>6.2f} {bare:>7.3f}"
              f" {bare / seconds:>8.2f}")


if __name__ == "__main__":
    main()
