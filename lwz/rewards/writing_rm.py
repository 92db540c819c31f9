"""The `writing_rm` reward: the scalar score of a Bradley-Terry writing reward model on (prompt, answer).

The reward model is served the way it was trained: a megatron-core GPT backbone with a scalar head
(`lwz.rm.scoring.RewardModelScorer`), on the actor's own ranks and grid (its TP/PP groups; the DP ranks
share the responses), its weights in host memory outside the reward phase. No second vLLM engine shares
a process or a GPU with the rollout engine (vLLM's sleep mode is one engine per process), and the reward
phase has the GPU to itself: the rollout engine sleeps, the actor waits. The same code runs over gloo on
CPU. Inputs are encoded with `lwz.rm.model.encode`, the encoding `lwz train-rm` trains with, and the
scores are the exported HF sequence classifier's.

A failure while building the model or a non-finite score raises `RewardModelError`; it never yields
stand-in zeros. The training loop implements the recipe's `on_failure`: "error" lets it propagate,
"skip_term" drops this term for the step and logs it (every rank gets the same scores, so every rank
decides alike).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from lwz.errors import LwzError
from lwz.recipe.settings import ArchCfg, check_settings, setting
from lwz.rewards.answer import extract_answer

log = logging.getLogger(__name__)

SCORABLE_FAMILIES = ("qwen2", "llama")  # what lwz builds as megatron-core GPT models


class RewardModelError(RuntimeError):
    """Scoring failed (the model could not be built, non-finite scores): the recipe's on_failure decides."""


def check_reward_model_folder(path: str | os.PathLike, key: str = "model") -> Path:
    """The folder of a decoder reward model lwz can serve (config.json of a one-label sequence classifier of
    a family megatron-core builds); LwzError naming the folder and `key` otherwise."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise LwzError(str(folder), key, "not a reward-model folder (no config.json); train one with lwz train-rm")
    config = json.loads((folder / "config.json").read_text())
    if config.get("num_labels", len(config.get("id2label", {0: 0}))) != 1:
        raise LwzError(str(folder), key, "not a scalar reward model (num_labels must be 1); train one with lwz "
                       "train-rm")
    if config.get("model_type") not in SCORABLE_FAMILIES:
        raise LwzError(str(folder), key, f"a {config.get('model_type')!r} reward model cannot be served: lwz "
                       f"scores with megatron-core decoders ({', '.join(SCORABLE_FAMILIES)}); train one with lwz train-rm")
    return folder


@dataclass
class WritingRMReward:
    """Parameters of the `writing_rm` reward (a Bradley-Terry scalar reward model).

    The term scores each response's answer (the whole response when it has no answer segment) to
    `sample["prompt"]`; `serve` builds this rank's shard of the model before the term scores anything.
    """

    model: str = setting(MISSING, "Local HF folder of the reward model (a qwen2/llama sequence classifier, as "
                         "lwz train-rm exports it). It is served on the actor's ranks with the actor's megatron "
                         "grid (tp, pp; the DP ranks share the responses), its weights in host memory outside the "
                         "reward phase; micro-batches of actor.micro_batch_tokens.")
    arch: ArchCfg = setting(factory=ArchCfg, doc="Architecture facts of the reward model (for the plan).")
    max_length: int = setting(16384, "Longest prompt + answer scored, in tokens (longer: truncated from the left).",
                              ge=1)
    on_failure: str = setting("error", "error: stop the run; skip_term: drop this term for the step and log it.",
                              choices=("error", "skip_term"))

    def __post_init__(self) -> None:
        self.scorer = None
        self.tokenizer = None
        self.failure: str | None = None  # why the model could not be built (on_failure: skip_term)
        if not self.model or self.model == MISSING:
            raise LwzError(None, "model", "the writing_rm reward needs the reward model's folder")
        check_settings(self)

    def serve(self, *, dtype: str, micro_batch_tokens: int, sequence_parallel: bool) -> None:
        """Build this rank's shard of the reward model on the actor's grid (collective: every actor rank calls
        it in the same order); a failure becomes RewardModelError (the recipe's on_failure decides)."""
        from transformers import AutoTokenizer

        from lwz.rm.scoring import RewardModelScorer

        folder = check_reward_model_folder(self.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.scorer = RewardModelScorer(folder, dtype=dtype, micro_batch_tokens=micro_batch_tokens,
                                            sequence_parallel=sequence_parallel)
        except LwzError:
            raise
        except Exception as e:
            self.failure = f"the reward model could not be built: {type(e).__name__}: {e}"
            raise RewardModelError(self.failure) from e

    def __call__(self, responses: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> list[float]:
        """RM scores of every response, the same on every rank; RewardModelError when scoring fails."""
        from lwz.rm.model import encode

        assert len(samples) == len(responses), f"{len(responses)} responses, {len(samples)} samples"
        answers = [extract_answer(r) or r for r in responses]
        for sample in samples:
            if not isinstance(sample.get("prompt"), str):
                raise LwzError(None, "prompt", "the writing_rm reward needs each sample's 'prompt' text")
        if self.scorer is None:
            raise RewardModelError(self.failure or "the reward model was not built (call serve first)")
        sequences = [encode(self.tokenizer, s["prompt"], a, self.max_length) for s, a in zip(samples, answers)]
        return _finite(self.scorer.scores(sequences))


def _finite(scores: list[float]) -> list[float]:
    bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise RewardModelError(f"non-finite reward-model scores for {len(bad)} answers (first: index {bad[0]})")
    return scores
