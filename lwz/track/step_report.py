"""What one step logs: metric dict and sample-table rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lwz.batch import RolloutBatch
from lwz.rewards.answer import split_think_answer
from lwz.rewards.compute import RewardMix
from lwz.rewards.metrics import reward_hacking_metrics
from lwz.rollout.weight_sync import SyncStats
from lwz.text import count_length


def step_metrics(batch: RolloutBatch, rewards: RewardMix, updates: Sequence[dict[str, float]],
                 times: dict[str, float], sync: SyncStats, epoch: int, loss_tokens: int) -> dict[str, float]:
    """Rewards, lengths, reward-hacking measures, actor update metrics and the time split of a step;
    `loss_tokens`: the batch's tokens in the loss, whose rate is the step's throughput."""
    out: dict[str, float] = {f"reward/{k}": float(np.mean(v)) for k, v in batch.rewards.items()}
    out["reward/total"] = rewards.total(batch.rewards)
    hacking = reward_hacking_metrics(batch.texts, batch.samples, settings=rewards.format_settings)
    out.update({f"hack/{k}": v for k, v in hacking.items()})
    targets = [sum(s["length_range"]) / 2 for s in batch.samples if s["length_range"][1] > 0]
    if targets:
        out["length/target_mean"] = float(np.mean(targets))
    lengths = [count_length(text) for text in batch.texts]
    out["length/response_mean"] = float(np.mean(lengths))  # what `measure: response` rewards
    in_range = [lo <= n <= hi for n, (lo, hi) in zip(lengths, (s["length_range"] for s in batch.samples)) if hi > 0]
    if in_range:
        out["length/response_in_range_rate"] = float(np.mean(in_range))
    if "answer_length_mean" in hacking:
        out["length/answer_mean"] = hacking["answer_length_mean"]
    if "think_length_mean" in hacking:
        out["length/think_mean"] = hacking["think_length_mean"]
    out["response/tokens_mean"] = float(np.mean([len(r) for r in batch.response_ids]))
    out["response/truncated_rate"] = float(np.mean(batch.truncated))
    out["advantage/abs_mean"] = float(np.mean(np.abs(batch.advantages)))
    for key in updates[0] if updates else ():  # the train/inference mismatch goes under rollout/
        name = f"rollout/{key.removeprefix('rollout_')}" if key.startswith("rollout_") else f"actor/{key}"
        out[name] = float(np.mean([u[key] for u in updates]))
    out.update({f"time/{k}": v for k, v in times.items()})
    if sync.waited:   # one_step_off: the wait for the next batch is the rollout's hold on the actor, not the sync's
        out["time/rollout"] += sync.waited
        out["time/sync"] -= sync.waited
    out["time/step"] = sum(times.values())
    out["time/tokens_per_s"] = loss_tokens / max(out["time/step"], 1e-9)
    out["sync/gb_per_s"] = sync.gb_per_s
    out["data/epoch"] = float(epoch)
    return out


def sample_rows(batch: RolloutBatch, count: int) -> list[dict]:
    """The first `count` responses as table rows: prompt, think, answer, lengths and each reward."""
    rows = []
    for i in range(min(count, len(batch))):
        think, answer = split_think_answer(batch.texts[i])
        row = {"prompt": batch.samples[i]["prompt"], "think": think or "", "answer": answer or "",
               "response": batch.texts[i], "answer_length": count_length(answer or ""),
               "target": str(batch.samples[i]["length_range"]), "truncated": batch.truncated[i],
               "advantage": batch.advantages[i]}
        row.update({f"reward/{k}": v[i] for k, v in batch.rewards.items()})
        rows.append(row)
    return rows
