"""`lwz train-rm`: train the Bradley-Terry writing reward model on preference pairs."""

from __future__ import annotations

import argparse


def cmd_train_rm(args: argparse.Namespace) -> int:
    """Train, print the held-out pairwise accuracy, save the HF folder at --out."""
    from lwz.rm.data import load_pairs
    from lwz.rm.train import TrainSettings, train_reward_model

    pairs = load_pairs(args.pairs)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             eval_fraction=args.eval_fraction, seed=args.seed, max_length=args.max_length,
                             train_top_layers=args.train_top_layers)
    metrics = train_reward_model(args.base, pairs, args.out, settings)
    per_kind = ", ".join(f"{k.split('/', 1)[1]} {v:.1%}" for k, v in metrics["eval"].items()
                         if k.startswith("accuracy/"))
    print(f"held-out pairwise accuracy {metrics['eval_accuracy']:.1%} on {metrics['eval_pairs']} pairs "
          f"(before training {metrics['eval_accuracy_before']:.1%})" + (f"; {per_kind}" if per_kind else ""))
    print(f"saved {args.out} (metrics in {args.out}/metrics.json)")
    return 0


def register(subparsers) -> None:
    """Add `train-rm` to the `lwz` sub-commands."""
    p = subparsers.add_parser(
        "train-rm", help="train the writing reward model (Bradley-Terry) on preference pairs",
        description="Fine-tunes a scalar head (AutoModelForSequenceClassification, num_labels=1) on JSONL "
                    "rows {prompt, chosen, rejected[, kind]} with -log sigmoid(r(x,y_w) - r(x,y_l)).")
    p.add_argument("--base", required=True, help="HF model folder to start from (decoder or encoder)")
    p.add_argument("--pairs", required=True, help="JSONL preference pairs")
    p.add_argument("--out", required=True, help="new folder for the trained model (appears atomically)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the training pairs (default: 2)")
    p.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (default: 5e-5)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step (default: 8)")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="held-out share of answers (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="split, order and head initialisation seed (default: 0)")
    p.add_argument("--max-length", type=int, default=256,
                   help="longest prompt + answer in tokens, cut from the left (default: 256)")
    p.add_argument("--train-top-layers", type=int, default=0,
                   help="train only the top N layers and the head (0: all; default: 0)")
    p.set_defaults(func=cmd_train_rm)
