"""Bradley-Terry training of a small HF reward model in one process: builds the tiny writing RM asset
(`tiny_writing_rm_path`: a scalar head on the tiny Qwen2 decoder) that the CPU recipes and tests score
with, on the actor's megatron grid like any writing RM. RMs at any scale train with `lwz train-rm RECIPE`
(megatron-core, `lwz.rm.stage`).

Loss over preference pairs: `-log sigmoid(r(x, y_w) - r(x, y_l))`. Held-out pairs (never sharing a
chosen answer with training pairs) give the pairwise accuracy, before and after training, overall
and per `kind`. The trained model is saved as an HF folder (weights, config, tokenizer,
`metrics.json`, `lwz_rm.json`) that appears atomically: built in a temporary folder, then renamed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lwz.atomic import new_folder, write_text
from lwz.errors import LwzError
from lwz.rm.data import PreferencePair, split_pairs
from lwz.rm.model import encode, forward_scores, load_backbone

log = logging.getLogger(__name__)

RM_STAMP = "lwz_rm.json"  # how the model was trained; the scorer reads max_length from it


@dataclass(frozen=True)
class TrainSettings:
    """How `train_reward_model` trains."""

    epochs: int = 2
    lr: float = 5e-5
    batch_size: int = 8
    eval_fraction: float = 0.2
    seed: int = 0
    max_length: int = 256

    def check(self) -> None:
        """LwzError naming the first invalid setting."""
        for name, ok, need in (("epochs", self.epochs >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
                               ("batch-size", self.batch_size >= 1, ">= 1"),
                               ("max-length", self.max_length >= 8, ">= 8")):
            if not ok:
                raise LwzError(None, name, f"{getattr(self, name.replace('-', '_'))} is invalid: need {need}")


@torch.no_grad()
def pairwise_accuracy(model, tokenizer, pairs: Sequence[PreferencePair], max_length: int,
                      batch_size: int = 16) -> dict[str, float]:
    """accuracy (r_chosen > r_rejected), mean margin, and accuracy per pair kind."""
    model.eval()
    margins, kinds = [], []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        seqs = [encode(tokenizer, p.prompt, p.chosen, max_length) for p in batch] + \
               [encode(tokenizer, p.prompt, p.rejected, max_length) for p in batch]
        scores = forward_scores(model, seqs, tokenizer.pad_token_id)
        margins += (scores[:len(batch)] - scores[len(batch):]).tolist()
        kinds += [p.kind for p in batch]
    result = {"accuracy": sum(m > 0 for m in margins) / len(margins), "mean_margin": sum(margins) / len(margins)}
    for kind in sorted({k for k in kinds if k}):
        ms = [m for m, k in zip(margins, kinds) if k == kind]
        result[f"accuracy/{kind}"] = sum(m > 0 for m in ms) / len(ms)
    return result


def train_reward_model(base: str | os.PathLike, pairs: Sequence[PreferencePair], out: str | os.PathLike,
                       settings: TrainSettings = TrainSettings()) -> dict:
    """Train a scalar-head RM from `base` on `pairs`, save it at `out` (must not exist); the metrics."""
    settings.check()
    out = Path(out)
    if out.exists():
        raise LwzError(str(out), "--out", "already exists; choose a new folder (the model appears there atomically)")
    if not (Path(base) / "config.json").is_file():
        raise LwzError(str(base), "--base", "not a model folder (no config.json)")
    started = time.monotonic()
    torch.manual_seed(settings.seed)
    train, held = split_pairs(pairs, settings.eval_fraction, settings.seed)
    model, tokenizer = load_backbone(base)
    before = pairwise_accuracy(model, tokenizer, held, settings.max_length)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    rng = random.Random(settings.seed)
    steps = settings.epochs * math.ceil(len(train) / settings.batch_size)
    losses = []
    with tqdm(total=steps, desc="train-rm", unit="step") as bar:
        for _ in range(settings.epochs):
            order = list(train)
            rng.shuffle(order)
            model.train()
            for start in range(0, len(order), settings.batch_size):
                batch = order[start:start + settings.batch_size]
                seqs = [encode(tokenizer, p.prompt, p.chosen, settings.max_length) for p in batch] + \
                       [encode(tokenizer, p.prompt, p.rejected, settings.max_length) for p in batch]
                scores = forward_scores(model, seqs, tokenizer.pad_token_id)
                loss = -F.logsigmoid(scores[:len(batch)] - scores[len(batch):]).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    after = pairwise_accuracy(model, tokenizer, held, settings.max_length)
    metrics = {
        "eval_accuracy": after["accuracy"], "eval_accuracy_before": before["accuracy"],
        "eval": after, "eval_before": before, "train_pairs": len(train), "eval_pairs": len(held),
        "final_train_loss": sum(losses[-10:]) / len(losses[-10:]), "steps": len(losses),
        "seconds": round(time.monotonic() - started, 1),
    }
    log.info("held-out pairwise accuracy %.3f (before training %.3f) on %d pairs",
             after["accuracy"], before["accuracy"], len(held))
    save_reward_model(model, tokenizer, out, {"base": str(base), **asdict(settings)}, metrics)
    return metrics


def save_reward_model(model, tokenizer, out: Path, settings: dict, metrics: dict) -> None:
    """Write the HF folder (with metrics.json and lwz_rm.json); it appears whole (lwz.atomic.new_folder)."""
    with new_folder(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_text(tmp / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text(tmp / RM_STAMP, json.dumps(settings, indent=2) + "\n")


TINY_RM_VERSION = 2  # 1 was a MiniLM encoder: lwz serves decoder RMs only (megatron-core GPT models)
TINY_RM_SETTINGS = TrainSettings(epochs=3, lr=1e-3, batch_size=16, eval_fraction=0.2, seed=0, max_length=256)


def tiny_writing_rm_path() -> Path:
    """A small trained writing RM (the tiny Qwen2 shape with Qwen2.5's whole vocabulary, on the packaged
    lwz/assets/rm/writing_pairs.jsonl) in the lwz cache, built once.

    An RM scores with a one-output head, so its vocabulary costs only an embedding lookup: it keeps Qwen2.5's,
    which also makes it a reward model whose tokenizer differs from the tiny policy's (it scores text).
    Safe when several processes race: each trains into its own folder; the first rename wins.
    """
    from lwz.models_local.assets import cache_dir
    from lwz.models_local.tiny import QWEN25_VOCAB, TINY_QWEN2_SHAPE, build_qwen2, quiet_transformers
    from lwz.rm.data import load_pairs

    path = cache_dir() / "models" / f"tiny-writing-rm-v{TINY_RM_VERSION}"
    if (path / RM_STAMP).is_file():
        return path
    log.info("training the tiny writing reward model into %s", path)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    pairs = load_pairs(Path(str(files("lwz") / "assets" / "rm" / "writing_pairs.jsonl")))
    backbone = staging.with_name(staging.name + ".backbone")
    shutil.rmtree(backbone, ignore_errors=True)
    try:
        with quiet_transformers():  # the training bar stays: it is lwz's
            build_qwen2(backbone, **{**TINY_QWEN2_SHAPE, "vocab_size": QWEN25_VOCAB}, seed=0)
            train_reward_model(backbone, pairs, staging, TINY_RM_SETTINGS)
    finally:
        shutil.rmtree(backbone, ignore_errors=True)
    try:
        os.rename(staging, path)
    except OSError:  # another process installed it first
        shutil.rmtree(staging, ignore_errors=True)
    return path
