"""Step time of the colocated synchronous loop vs rollout engines of their own, one-step-off and async.

Both layouts run the same GRPO workload with the same number of processes, back to back in one
invocation (`lwz run`, the real loop): the tiny Qwen2 over a byte vocabulary with long-tailed response lengths
(`lwz.models_local.tiny.build_byte_qwen2`: median ~50 tokens, mean ~80, a few past 300), whose decode
iteration costs mostly a fixed amount as a GPU's does (bench/long_tail.py; on the 16k-row tiny Qwen2 a CPU
pays per running sample, so empty batch slots cost little and waiting for the tail is nearly free), `--prompts`
prompts x `--group` samples of at most `--max-tokens` tokens a step, a length reward and the tiny writing RM
(megatron on the actor's ranks: the scoring that engines of their own can generate beside), fp32.

- colocated sync: `--ranks` ranks, each an actor shard (data-parallel) and an engine; generation and
  update take turns on every rank;
- split one_step_off: `--ranks - 1` actor ranks and one engine rank; the engine generates step n+1
  while the actor trains on step n (decoupled PPO with TIS);
- split async (max_staleness 2, named alone: its defaults): the same ranks; the engine keeps twice a step's
  groups in flight, delivers the first to complete and continues the others under the next weights.

Printed: median s/step over the steps after the first (whose rollout nothing overlaps), the time the
actor waited for rollouts, the engine's generation time, the actor's scoring and the part of it the
engines generated beside (the reward overlap), end-to-end response tokens per second (the tokens the
actor trained on), and the throughput ratios.

    OMP_NUM_THREADS=1 python bench/async_step.py            # ~2.5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lwz.models_local.tiny import BYTE_VOCAB, build_byte_qwen2

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["Write a story.", "Describe the sea.", "Write a poem.", "Explain rain.", "Describe a city.",
             "Write a letter.", "Tell a joke.", "Describe winter."]


def write_recipe(folder: Path, model: Path, args: argparse.Namespace) -> Path:
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q, "length_range": [2, 6]}) + "\n" for q in QUESTIONS))
    recipe = folder / "bench.yaml"
    recipe.write_text(f"""
base: {ROOT / "recipes" / "tiny.yaml"}
name: bench
model: {{path: {model}, arch: {{vocab_size: {BYTE_VOCAB}}}}}
actor: {{tp: 1, lr: 1.0e-5}}
rollout: {{template: raw, group_size: {args.group}, max_tokens: {args.max_tokens}, max_prompt_tokens: 64,
          temperature: 1.0}}
rewards:
  terms:
    - {{name: length, weight: 1.0, params: {{measure: response, l_max: 40}}}}
    - {{name: writing_rm, weight: 1.0, params: {{model: "${{asset:tiny-writing-rm}}", max_length: 320}}}}
schedule: {{steps: {args.steps}, prompts_per_step: {args.prompts}, save_every: 0}}
data: {{prompts: [prompts.jsonl]}}
cluster: {{gpus_per_node: {args.ranks}}}
logging: {{output_dir: {folder / "runs"}, wandb: {{mode: disabled}}}}
""")
    return recipe


LAYOUTS = {
    "colocated sync": [],
    "split one_step_off": ["rollout.colocate=false", "rollout.engines=1", "rollout.mode=one_step_off"],
    "split async (k=2)": ["rollout.colocate=false", "rollout.engines=1", "rollout.mode=async"],
}


def run(recipe: Path, name: str, overrides: list[str]) -> tuple[float, list[dict]]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lwz.cli", "run", str(recipe), f"logging.run={name}", *overrides],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = [json.loads(line) for line in (recipe.parent / "runs" / "bench" / name / "metrics.jsonl").open()]
    return wall, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2, help="processes in both layouts")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=900)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lwz-async-step-"))
    model = build_byte_qwen2(workdir / "byte-qwen2")
    recipe = write_recipe(workdir, model, args)
    print(f"{args.prompts} prompts x {args.group} samples, max {args.max_tokens} tokens, {args.steps} steps, "
          f"{args.ranks} processes per layout", flush=True)
    print("| layout | s/step (median, steps 2+) | actor waits for rollout | engine generates | update | "
          "reward | reward beside generation | response tokens/s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    throughput = {}
    for i, (layout, overrides) in enumerate(LAYOUTS.items()):
        wall, rows = run(recipe, f"layout{i}", overrides)
        later = rows[1:]
        generate = [r.get("rollout/generate_s", r["time/rollout"]) for r in later]
        tokens = sum(r["response/tokens_mean"] * args.prompts * args.group for r in later)
        throughput[layout] = tokens / sum(r["time/step"] for r in later)
        reward = sum(r["time/reward"] for r in later)
        beside = sum(r["time/reward_overlap"] for r in later) / max(reward, 1e-9)
        print(f"| {layout} | {statistics.median(r['time/step'] for r in later):.2f} | "
              f"{statistics.median(r['time/rollout'] for r in later):.2f} | {statistics.median(generate):.2f} | "
              f"{statistics.median(r['time/update'] for r in later):.2f} | "
              f"{statistics.median(r['time/reward'] for r in later):.3f} | {beside:.0%} | "
              f"{throughput[layout]:.0f} | {wall:.0f} |", flush=True)
    colocated, one_step_off, async_ = throughput.values()
    print(f"\nthroughput (response tokens/s): one_step_off / colocated sync = {one_step_off / colocated:.2f}, "
          f"async / one_step_off = {async_ / one_step_off:.2f}, async / colocated sync = {async_ / colocated:.2f}")


if __name__ == "__main__":
    main()
