"""TRL's GRPOTrainer on a fixed tiny workload: per-step seconds, completion tokens and peak RSS, as JSON.

    OMP_NUM_THREADS=1 python bench/trl_grpo.py --model MODEL_DIR --prompts PROMPTS_JSONL \
        --steps 5 --group 4 --max-tokens 128 --lr 1e-5 --out RESULT.json

Every optimizer step samples `--group` completions for each prompt of the file (rows {"prompt": text},
chat-templated) with `model.generate` (temperature 1, top-p 1), scores them with a length and a format
reward, and takes one fp32 CPU step on the token-mean loss (beta 0: no reference model). A step's time
runs from `on_step_begin` to `on_step_end`, so it includes generation. Writes to `--out`, and prints
on stdout, one line `RESULT {json}` (bench/grpo_step.py compares it with lwz). Needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import tempfile
import time
import warnings
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["VLLM_LOGGING_LEVEL"] = "ERROR"  # trl imports vllm (unused here) when it is installed
warnings.filterwarnings("ignore")
for _name in ("vllm", "trl", "accelerate"):
    logging.getLogger(_name).setLevel(logging.ERROR)

import datasets  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402

FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
WORDS_LO, WORDS_HI, FALLOFF = 30, 60, 30


def _text(completion: list[dict[str, str]]) -> str:
    """A conversational completion's text: it is [{"role": "assistant", "content": ...}]."""
    return completion[0]["content"]


def length_reward(completions: list[list[dict[str, str]]], **_: Any) -> list[float]:
    """1.0 for 30-60 words in the answer (inside <answer>, else the whole text), falling linearly to 0 over 30."""
    rewards = []
    for completion in completions:
        text = _text(completion)
        match = ANSWER.search(text)
        words = len((match.group(1) if match else text).split())
        distance = max(WORDS_LO - words, words - WORDS_HI, 0)
        rewards.append(max(0.0, 1.0 - distance / FALLOFF))
    return rewards


def format_reward(completions: list[list[dict[str, str]]], **_: Any) -> list[float]:
    """1.0 for `<think>...</think>` then `<answer>...</answer>` (whitespace around them), else 0.0."""
    return [1.0 if FORMAT.fullmatch(_text(c)) else 0.0 for c in completions]


class StepTimer(TrainerCallback):
    """Seconds and completion tokens of every optimizer step."""

    def __init__(self, completions_per_step: int) -> None:
        self.completions_per_step = completions_per_step
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self._start = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._start)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if logs and "completions/mean_length" in logs:  # logging_steps=1: one generation per log
            self.tokens.append(round(logs["completions/mean_length"] * self.completions_per_step))


def run(model: str, prompts_path: str, steps: int, group: int, max_tokens: int, lr: float,
        seed: int) -> dict[str, Any]:
    """Train `steps` GRPO steps; the result dict (see the module docstring)."""
    with open(prompts_path, encoding="utf-8") as f:
        rows = [{"prompt": [{"role": "user", "content": json.loads(line)["prompt"]}]} for line in f if line.strip()]
    batch = len(rows) * group
    with tempfile.TemporaryDirectory() as out_dir:
        config = trl.GRPOConfig(
            output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
            num_generations=group, num_iterations=1, max_completion_length=max_tokens, temperature=1.0, top_p=1.0,
            learning_rate=lr, lr_scheduler_type="constant", beta=0.0, loss_type="dapo",
            model_init_kwargs={"dtype": "float32"}, bf16=False, fp16=False, gradient_checkpointing=False,
            use_vllm=False, use_cpu=True, seed=seed, dataloader_num_workers=0, logging_steps=1,
            save_strategy="no", report_to="none", disable_tqdm=True,
        )
        timer = StepTimer(batch)
        trainer = trl.GRPOTrainer(model=model, reward_funcs=[length_reward, format_reward], args=config,
                                  train_dataset=datasets.Dataset.from_list(rows), callbacks=[timer])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return {"system": "trl", "trl_version": trl.__version__, "step_seconds": timer.seconds,
            "completion_tokens": timer.tokens,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local HF model folder")
    parser.add_argument("--prompts", required=True, help='JSONL of {"prompt": text}')
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--group", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="result JSON file")
    args = parser.parse_args()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    result = run(args.model, args.prompts, args.steps, args.group, args.max_tokens, args.lr, args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
