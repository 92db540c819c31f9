"""`lwz annotate-lengths DATA OUT`: target word ranges for training prompts."""

from __future__ import annotations

import argparse


def cmd_annotate_lengths(args: argparse.Namespace) -> int:
    """Annotate DATA into OUT; failed rows go to OUT.errors.jsonl; prints the counts."""
    from lwz.data.annotate import annotate_file, errors_path

    summary = annotate_file(args.data, args.out, model=args.model, field_name=args.field,
                            batch_size=args.batch_size, use_fast_path=not args.no_fast_path,
                            max_tokens=args.max_tokens, max_model_len=args.max_model_len,
                            keep_given=args.keep_given)
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.error_reasons.items()))
    given = f", {summary.given} given" if summary.given else ""
    print(f"annotated {summary.annotated} rows ({summary.fast} fast path, {summary.llm} LLM{given}), "
          f"{summary.done_before} already done, {summary.errors} errors"
          + (f" ({reasons}) in {errors_path(args.out)}" if summary.errors else ""))
    return 0


def register(subparsers) -> None:
    """Add `annotate-lengths` to the `lwz` sub-commands."""
    p = subparsers.add_parser(
        "annotate-lengths", help="predict a [lo, hi] word range per prompt (fast path, else an LLM)",
        description="Adds length_range [lo, hi] and length_range_source to each row of DATA, written to "
                    "OUT (JSONL, resumable); rows that fail go to OUT.errors.jsonl.")
    p.add_argument("data", help="JSONL file of prompts")
    p.add_argument("out", help="annotated JSONL (re-running skips rows already there)")
    p.add_argument("--model", help="local HF folder of the annotating LLM (served by vLLM); "
                                   "without it only prompts that state a length are annotated")
    p.add_argument("--field", default="prompt", help="field holding the request (default: prompt)")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per LLM batch and per write (default: 32)")
    p.add_argument("--max-tokens", type=int, default=512, help="longest LLM answer in tokens (default: 512)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="engine context length (default: the model's, at most 8192)")
    p.add_argument("--no-fast-path", action="store_true", help="ask the LLM even when the prompt states a length")
    p.add_argument("--keep-given", action="store_true",
                   help="rows that already carry a valid length_range keep it (source: their length_range_source, "
                        "else 'given')")
    p.set_defaults(func=cmd_annotate_lengths)
