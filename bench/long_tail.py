"""Long-tailed rollouts: the synchronous rollout vs the partial rollout, side by side on one engine.

The workload is long-writing RL's length distribution at toy scale: the tiny Qwen2 over a byte
vocabulary whose end-of-text row makes response lengths long-tailed (`lwz.models_local.tiny.build_byte_qwen2`:
sampled at temperature 1, median ~50 tokens, mean ~80, the longest of 64 often past 300; max_tokens
600). Its 320-row output layer keeps a decode iteration's cost mostly fixed, as on a GPU; the 152k
vocabulary would make a CPU pay per running sample and hide what waiting for the tail costs. Every step trains
`--prompts` groups of `--group` samples. The synchronous rollout generates exactly those and waits
for the longest response; the partial rollout keeps `over_sample x prompts` groups in flight, ends
the step when `prompts` groups are complete and carries the rest over (lwz.rollout.partial). Steps
alternate between the two on the same engine; no update runs between steps (the rollout is the
subject), so the carried tokens are the policy's own. Printed per mode: response tokens trained per
second of rollout (tokens generated for groups still in flight at the end count as cost, not as
output), the tail ratio (decode iterations of the step over its mean trained response length) and
the engine idle fraction; then partial / sync.

    OMP_NUM_THREADS=1 python bench/long_tail.py            # ~1 minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lwz.batch import RolloutBatch
from lwz.rollout.partial import PartialRollout, sync_round_metrics
from lwz.rollout.role import EngineRole
from lwz.engines.vllm_engine import SamplingSettings, VllmEngine
from lwz.models_local.tiny import build_byte_qwen2

QUESTIONS = ["Write a story.", "Describe the sea.", "Write a poem.", "Explain rain.", "Describe a city.",
             "Write a letter.", "Tell a joke.", "Describe winter."]


def sync_step(engine: VllmEngine, prompts: list[str], sampling: SamplingSettings, seed: int) -> tuple[int, float, dict]:
    start = time.perf_counter()
    groups = engine.generate(prompts, sampling, seed)
    seconds = time.perf_counter() - start
    flat = [c for g in groups for c in g]
    batch = RolloutBatch(prompt_index=[0] * len(flat), group=[g for g, group in enumerate(groups) for _ in group],
                         samples=[{}] * len(flat), prompt_ids=[c.prompt_ids for c in flat],
                         response_ids=[c.response_ids for c in flat], texts=[""] * len(flat),
                         truncated=[c.truncated for c in flat], rollout_logprobs=[c.logprobs for c in flat])
    return sum(len(c.response_ids) for c in flat), seconds, sync_round_metrics(batch, engines=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="groups trained per step")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=600)
    parser.add_argument("--over-sample", type=float, default=4.0)
    parser.add_argument("--max-staleness", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="measured steps per mode (after one warm-up each)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lwz-long-tail-"))
    model = build_byte_qwen2(workdir / "byte-qwen2")
    engine = VllmEngine(str(model), device="cpu", dtype="fp32", seed=0, max_model_len=64 + args.max_tokens)
    sampling = SamplingSettings(args.group, 1.0, 1.0, args.max_tokens)
    role = EngineRole.local("rollout")
    partial = PartialRollout(args.prompts, args.group, args.over_sample, args.max_staleness)

    def new_prompt(position: int) -> tuple[int, list[int], int]:
        index = position % len(QUESTIONS)
        return index, engine.tokenizer.encode(QUESTIONS[index]), args.max_tokens

    results: dict[str, dict[str, list[float]]] = {"sync": {}, "partial": {}}

    def record(mode: str, tokens: int, seconds: float, metrics: dict) -> None:
        r = results[mode]
        for key, value in (("tokens", tokens), ("seconds", seconds), ("tail", metrics["rollout/tail_ratio"]),
                           ("idle", metrics["rollout/engine_idle_fraction"])):
            r.setdefault(key, []).append(value)

    for step in range(args.steps + 1):
        prompts = [QUESTIONS[(step * args.prompts + i) % len(QUESTIONS)] for i in range(args.prompts)]
        tokens, seconds, metrics = sync_step(engine, prompts, sampling, seed=step)
        if step:
            record("sync", tokens, seconds, metrics)
        start = time.perf_counter()
        batch, metrics = partial.step(engine, role, sampling, version=step, seed=step, new_prompt=new_prompt)
        seconds = time.perf_counter() - start
        if step:
            record("partial", sum(len(s.response_ids) for g in batch for s in g.samples), seconds, metrics)
        print(f"step {step}{' (warm-up)' if not step else ''}: sync {results['sync'].get('seconds', [0])[-1]:.2f} s, "
              f"partial {seconds:.2f} s, carried {metrics['rollout/carried_out']:.0f}", flush=True)

    print(f"\n{args.prompts} prompts x {args.group} samples trained per step, max {args.max_tokens} tokens, "
          f"over-sample {args.over_sample:g}, max staleness {args.max_staleness}; {args.steps} steps per mode")
    print("| rollout | trained tokens/s | tail ratio (mean) | engine idle | s/step (median) |")
    print("|---|---|---|---|---|")
    rates = {}
    for mode, r in results.items():
        rates[mode] = sum(r["tokens"]) / sum(r["seconds"])
        print(f"| {mode} | {rates[mode]:.0f} | {statistics.mean(r['tail']):.2f} | {statistics.mean(r['idle']):.2f} | "
              f"{statistics.median(r['seconds']):.2f} |")
    print(f"\npartial / sync throughput = {rates['partial'] / rates['sync']:.2f} (target >= 1.5); "
          f"partial tail ratio {statistics.mean(results['partial']['tail']):.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
