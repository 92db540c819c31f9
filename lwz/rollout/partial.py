"""Partial rollout: a step's rollout ends when enough prompt groups are complete, not on the slowest sample.

Each step tops the carried pool up with new prompts to `over_sample x prompts_per_step` groups, hands
the unfinished ones to the engines by expected work, and steps every engine (one request per sample,
`VllmEngine.start/step/abort`) until it has completed its quota of groups. The engine's other samples
are aborted where they are: their tokens, per-token engine logprobs and the policy version each token
was sampled under are kept, and next step they continue (prompt + response so far, prefilled again
under the new weights) for the tokens they have left. A group whose oldest token is more than
`max_staleness` updates old at the start of a step is dropped. Groups that complete in the same engine
step as the quota's last one are as fresh as it: they join this batch (in whole `lwz.plan.resolve.batch_unit`s, so
the batch still splits into the mini-batches and data-parallel shards) rather than wait in the pool for
the next step, where their tokens would be an update stale.

The pool is the same on every rank (each engine's results are gathered everywhere, as in
`EngineRole.run`) and goes into the checkpoint with the prompt-stream position, so a resumed run
continues exactly the samples an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from lwz.batch import RolloutBatch
from lwz.rollout.role import EngineRole, share
from lwz.engines.vllm_engine import SamplingSettings, VllmEngine

__all__ = ["Group", "PartialRollout", "RoundStats", "Sample", "assign_by_work", "expected_tokens", "generate_round",
           "groups_to_batch", "round_metrics", "sync_round_metrics"]


@dataclass
class Sample:
    """One response of a group, finished or not."""

    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)   # policy version (updates applied) of each token
    finish_reason: str | None = None                    # None while it is still being generated


@dataclass
class Group:
    """The samples of one prompt; `uid` is unique in the run."""

    uid: int
    prompt_index: int
    prompt_ids: list[int]
    expected_tokens: int      # a guess of one response's length, for balancing engines
    samples: list[Sample]

    @property
    def complete(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)

    def oldest_version(self) -> int | None:
        """The policy version of the group's oldest token (None before its first token)."""
        return min((s.versions[0] for s in self.samples if s.versions), default=None)

    def remaining_work(self) -> int:
        """Expected tokens still to generate (at least one per unfinished sample)."""
        return sum(max(self.expected_tokens - len(s.response_ids), 1) for s in self.samples if s.finish_reason is None)

    @classmethod
    def from_dict(cls, d: dict) -> Group:
        return cls(**{**d, "samples": [Sample(**s) for s in d["samples"]]})


@dataclass
class RoundStats:
    """One engine's round: decode iterations, sample-iterations run, samples it started with, seconds."""

    engine_steps: int = 0
    sample_steps: int = 0
    samples: int = 0
    seconds: float = 0.0


def assign_by_work(groups: Sequence[Group], engines: int) -> list[list[Group]]:
    """Split `groups` over `engines` with `share` counts each, heaviest expected work first to the engine
    with the least work so far (longest-processing-time); each engine keeps the groups' pool order."""
    caps = [len(share(len(groups), engines, e)) for e in range(engines)]
    load, parts = [0] * engines, [[] for _ in range(engines)]
    order = sorted(range(len(groups)), key=lambda i: (-groups[i].remaining_work(), i))
    for i in order:
        e = min((e for e in range(engines) if len(parts[e]) < caps[e]), key=lambda e: (load[e], e))
        parts[e].append(i)
        load[e] += groups[i].remaining_work()
    return [[groups[i] for i in sorted(part)] for part in parts]


def generate_round(engine: VllmEngine, groups: Sequence[Group], quota: int, sampling: SamplingSettings,
                   version: int) -> tuple[list[Group], list[Group], RoundStats]:
    """Step `engine` until `quota` of `groups` are complete (or nothing runs); abort the rest.

    Returns the completed groups in the order they completed, the others (carried, with what they have),
    and the round's stats. The groups are updated in place.
    """
    started = time.perf_counter()
    by_id = {}
    for g in groups:
        for k, s in enumerate(g.samples):
            if s.finish_reason is None:
                by_id[f"{g.uid}.{k}"] = (g, s)
                engine.start(f"{g.uid}.{k}", g.prompt_ids + s.response_ids, sampling.max_tokens - len(s.response_ids),
                             sampling)
    stats = RoundStats(samples=len(by_id))
    done = [g for g in groups if g.complete]
    running = len(by_id)

    def add(delta) -> None:
        sample = by_id[delta.request_id][1]
        sample.response_ids += delta.token_ids
        sample.logprobs += delta.logprobs
        sample.versions += [version] * len(delta.token_ids)
        sample.finish_reason = delta.finish_reason

    while len(done) < quota and running:
        stats.engine_steps += 1
        stats.sample_steps += running
        for delta in engine.step():
            add(delta)
            running -= 1
            group = by_id[delta.request_id][0]
            if group.complete:
                done.append(group)
    unfinished = [rid for rid, (_, s) in by_id.items() if s.finish_reason is None]
    for delta in engine.abort(unfinished) if unfinished else []:
        add(delta)
    stats.seconds = time.perf_counter() - started
    return done, [g for g in groups if not g.complete], stats


class PartialRollout:
    """The carried pool and the prompt-stream position, identical on every rank."""

    def __init__(self, prompts_per_step: int, group_size: int, over_sample: float, max_staleness: int,
                 batch_unit: int = 1):
        self.keep, self.group_size, self.over_sample = prompts_per_step, group_size, over_sample
        self.max_staleness, self.unit = max_staleness, batch_unit
        self.pool: list[Group] = []
        self.position = 0       # prompts taken from the stream so far
        self.next_uid = 0

    def state(self) -> dict:
        """The pool and stream position (a checkpoint keeps them, the token lists as tensors)."""
        return {"pool": [asdict(g) for g in self.pool], "position": self.position, "next_uid": self.next_uid}

    def load(self, state: dict) -> None:
        self.pool = [Group.from_dict(g) for g in state["pool"]]
        self.position, self.next_uid = state["position"], state["next_uid"]

    def step(self, engine: VllmEngine, role: EngineRole, sampling: SamplingSettings, version: int, seed: int,
             new_prompt: Callable[[int], tuple[int, list[int], int]], keep: int | None = None,
             trained_at: int | None = None, join: bool = True) -> tuple[list[Group], dict[str, float]]:
        """Collective: `keep` (default prompts_per_step) complete groups, carried ones first, and the metrics;
        with `join`, also the groups completed beyond the quota in its last engine step, in whole batch units.

        The engine holds the weights after `version` updates (the new tokens' version); the groups are trained
        on after `trained_at` updates (default `version`: the colocated layout; later on engines of their own),
        against which staleness counts. `new_prompt(position)` gives the prompt at a stream position: (prompt
        index, token ids, expected response tokens). Another call at the same `version` is another round of the
        step (dynamic sampling): the pool goes on where the last round stopped.
        """
        keep = self.keep if keep is None else keep
        trained_at = version if trained_at is None else trained_at
        fresh = [g for g in self.pool if not self._too_stale(g, trained_at)]
        dropped = len(self.pool) - len(fresh)
        carried_in = sum(s.finish_reason is None and bool(s.response_ids) for g in fresh for s in g.samples)
        while len(fresh) < math.ceil(keep * self.over_sample - 1e-9):
            index, ids, expected = new_prompt(self.position)
            fresh.append(Group(self.next_uid, index, ids, expected, [Sample() for _ in range(self.group_size)]))
            self.position += 1
            self.next_uid += 1
        ready = [g for g in fresh if g.complete]
        todo = [g for g in fresh if not g.complete]
        need = max(keep - len(ready), 0)
        engines = len(role.engine_ranks)
        parts = assign_by_work(todo, engines)

        def work(e: int) -> tuple[list[dict], list[dict], RoundStats]:
            torch.manual_seed(seed + e)
            done, rest, stats = generate_round(engine, parts[e], len(share(need, engines, e)), sampling, version)
            return [asdict(g) for g in done], [asdict(g) for g in rest], stats

        results = role.each(work)
        done = ready + [Group.from_dict(g) for d, _, _ in results for g in d]
        rest = [Group.from_dict(g) for _, r, _ in results for g in r]
        size = keep + (max(len(done) - keep, 0) // self.unit * self.unit if join else 0)
        batch, self.pool = done[:size], done[size:] + rest
        stats = [s for _, _, s in results]
        return batch, {**self._metrics(batch, stats, trained_at, dropped, carried_in),
                       "rollout/joined_groups": float(max(len(batch) - keep, 0))}

    def _too_stale(self, group: Group, trained_at: int) -> bool:
        oldest = group.oldest_version()
        return oldest is not None and trained_at - oldest > self.max_staleness

    def _metrics(self, batch: list[Group], stats: list[RoundStats], trained_at: int, dropped: int,
                 carried_in: int) -> dict[str, float]:
        samples = [s for g in batch for s in g.samples]
        tokens = sum(len(s.response_ids) for s in samples)
        stale = sum(sum(v < trained_at for v in s.versions) for s in samples)
        lags = [trained_at - g.oldest_version() for g in batch if g.oldest_version() is not None]
        mean_length = tokens / max(len(samples), 1)
        mixed = sum(len(set(s.versions)) > 1 for s in samples)
        return {"rollout/carried_in": float(carried_in),
                "rollout/carried_out": float(sum(s.finish_reason is None for g in self.pool for s in g.samples)),
                "rollout/dropped_stale_groups": float(dropped),
                "rollout/off_policy_token_fraction": stale / max(tokens, 1),
                "rollout/staleness_mean": sum(lags) / max(len(lags), 1),
                "rollout/staleness_max": float(max(lags, default=0)),
                "rollout/mixed_version_samples": float(mixed),
                **round_metrics(stats, mean_length)}


def round_metrics(stats: Sequence[RoundStats], mean_length: float) -> dict[str, float]:
    """Tail ratio (the slowest engine's decode iterations over the step's mean response length: what
    waiting for the longest response costs) and engine idle fraction (sample slots left empty)."""
    steps = max((s.engine_steps for s in stats), default=0)
    slots = sum(steps * s.samples for s in stats)
    return {"rollout/engine_steps": float(steps), "rollout/tail_ratio": steps / max(mean_length, 1.0),
            "rollout/engine_idle_fraction": 1.0 - sum(s.sample_steps for s in stats) / max(slots, 1)}


def sync_round_metrics(batch: RolloutBatch, engines: int) -> dict[str, float]:
    """`round_metrics` of a blocking generate, from the response lengths: each engine decodes its share of
    the groups side by side (all admitted at once) for as many iterations as its longest response."""
    groups = sorted(set(batch.group))
    stats = []
    for e in range(engines):
        mine = {groups[i] for i in share(len(groups), engines, e)}
        lengths = [len(r) for g, r in zip(batch.group, batch.response_ids) if g in mine]
        stats.append(RoundStats(max(lengths, default=0), sum(lengths), len(lengths)))
    return round_metrics(stats, sum(len(r) for r in batch.response_ids) / max(len(batch), 1))


def expected_tokens(row: dict, max_tokens: int) -> int:
    """A guess of a response's length in tokens, for balancing engines: 1.5 tokens per unit of the upper
    target length (words or CJK characters), else max_tokens."""
    upper = row["length_range"][1]
    return min(max_tokens, math.ceil(1.5 * upper)) if upper > 0 else max_tokens


def groups_to_batch(groups: Sequence[Group], prompts: Sequence[dict], tokenizer, version: int) -> RolloutBatch:
    """Flatten complete groups into the step's batch; tokens sampled before `version` are stale."""
    flat = [(g, group, s) for g, group in enumerate(groups) for s in group.samples]
    return RolloutBatch(prompt_index=[group.prompt_index for _, group, _ in flat], group=[g for g, _, _ in flat],
                        samples=[prompts[group.prompt_index] for _, group, _ in flat],
                        prompt_ids=[list(group.prompt_ids) for _, group, _ in flat],
                        response_ids=[s.response_ids for _, _, s in flat],
                        texts=[tokenizer.decode(s.response_ids, skip_special_tokens=True) for _, _, s in flat],
                        truncated=[s.finish_reason == "length" for _, _, s in flat],
                        rollout_logprobs=[s.logprobs for _, _, s in flat],
                        stale_tokens=[sum(v < version for v in s.versions) for _, _, s in flat],
                        versions=[list(s.versions) for _, _, s in flat])
