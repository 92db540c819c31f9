"""The actor update's memory at one long sequence, measured against the plan's activation model.

For each length N (a fresh process each), the megatron Policy takes one warm-up update on a short
sequence (grads and Adam state allocated), then one update on one sequence of N tokens (320 of prompt),
a micro-batch of exactly N tokens. It reports what the plan counts for that micro-batch
(`ActorMemory.activations`, lwz/plan/memory.py), the bytes autograd saved for the backward (every tensor
`save_for_backward` kept, parameters excluded, each storage once) and the process's resident memory
above its level before the update (sampled every 10 ms): saved tensors the formula misses show in the
second column, transient buffers and allocator slack only in the third.

    OMP_NUM_THREADS=2 python bench/update_memory.py --model smollm2 --tokens 1024 2048 4416
    OMP_NUM_THREADS=1 python bench/update_memory.py --model tiny --tokens 256 512
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from actor import make_batch, make_recipe, model_path

from lwz.plan.resolve import resolve
from lwz.recipe.load import load_recipe

PROMPT = 320
REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3


class PeakRss:
    """The process's resident set, sampled every 10 ms on a thread, its maximum since `reset`."""

    def __init__(self):
        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def reset(self) -> int:
        self.peak = self.process.memory_info().rss
        return self.peak

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


class SavedTensors:
    """Bytes autograd keeps for the backward while active: each storage once, parameters not counted."""

    def __init__(self, parameters):
        self.skip = {p.untyped_storage().data_ptr() for p in parameters}
        self.seen: set[int] = set()
        self.bytes = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.skip and ptr not in self.seen:
            self.seen.add(ptr)
            self.bytes += storage.nbytes()
        return tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def recipe_for(model: str, tokens: int, workdir: Path):
    """The recipe of one N-token micro-batch: the ultra-long experiment's for SmolLM2, bench/actor.py's tiny one."""
    if model == "smollm2":
        return load_recipe(REPO / "recipes" / "smollm2_ultralong.yaml",
                           [f"actor.micro_batch_tokens={tokens}", f"rollout.max_tokens={tokens - PROMPT}"])
    args = argparse.Namespace(prompt_len=PROMPT, response_len=tokens - PROMPT, micro_seqs=1, dtype="fp32",
                              device="cpu", steps=1, warmup=1)
    return make_recipe(model_path(model, workdir, "fp32"), args)


def measure(model: str, tokens: int) -> dict[str, float]:
    """One N-token update in this process: planned activations, saved tensors, RSS above the start (GiB)."""
    from lwz.actor.policy import Policy
    from lwz.launch.env import DistEnv
    from lwz.launch.ports import free_port_block
    from lwz.runtime import init_distributed

    with tempfile.TemporaryDirectory() as workdir:
        recipe = recipe_for(model, tokens, Path(workdir))
        plan = resolve(recipe)
        vocab = recipe.model.arch.vocab_size
        init_distributed(device="cpu", seed=0, env=DistEnv(master_addr="127.0.0.1", master_port=free_port_block()))
        policy = Policy(recipe, plan)
        policy.update(make_batch(1, 16, 16, vocab))   # grads and the optimizer's state exist now
        batch = make_batch(1, PROMPT, tokens - PROMPT, vocab)
        saved = SavedTensors(policy.model.parameters())
        rss = PeakRss()
        start = rss.reset()
        with saved.hooks():
            policy.update(batch)
        peak = rss.stop()
    return {"tokens": tokens, "planned": plan.actor_memory[0].activations / GIB, "saved": saved.bytes / GIB,
            "rss_above": (peak - start) / GIB, "rss_peak": peak / GIB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--one", action="store_true", help="(internal) measure --tokens[0] in this process")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.one:
        print(json.dumps(measure(args.model, args.tokens[0])), flush=True)
        return
    print(f"model {args.model}, fp32, CPU; one sequence per update ({PROMPT} prompt tokens); GiB")
    print("| tokens | planned activations | saved for backward | RSS above start (peak) | saved / planned | RSS / planned |")
    print("|---|---|---|---|---|---|")
    for n in args.tokens:
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--tokens", str(n), "--one"],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"| {n:,} | {r['planned']:.2f} | {r['saved']:.2f} | {r['rss_above']:.2f} ({r['rss_peak']:.2f}) "
              f"| {r['saved'] / r['planned']:.2f} | {r['rss_above'] / r['planned']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
