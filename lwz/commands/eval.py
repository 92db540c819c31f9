"""`lwz eval TARGET --bench NAME`: generate with vLLM, score, write results, summary and plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lwz.errors import LwzError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run's checkpoint or an HF model folder on a benchmark")
    p.add_argument("target", help="an HF model folder, or a run folder (with --step)")
    p.add_argument("--bench", required=True, choices=("longbench_write", "writingbench"))
    p.add_argument("--step", type=int, help="checkpoint step of a run folder (default: the last)")
    p.add_argument("--data", help="benchmark file (default: the shipped one)")
    p.add_argument("--critic", help="HF folder of the WritingBench critic (default: the target itself)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items")
    p.add_argument("--max-tokens", type=int, default=15500)
    p.add_argument("--template", choices=("think", "nothink", "raw"), default="think")
    p.add_argument("--chat-template", action="store_true",
                   help="send prompts through the tokenizer's chat template (instruct models)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--device", choices=("cpu", "gpu"), default=None, help="default: gpu when CUDA is visible")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default: bf16 (GPU), fp32 (CPU)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the engines (GPUs per engine)")
    p.add_argument("--cpu-kv-cache-gib", type=float, default=None,
                   help="CPU only: the engine's KV cache in GiB (default 1; many long answers at once want more)")
    p.add_argument("--max-model-len", type=int, help="engine context in tokens (default: the model's own); items "
                   "whose prompt and --max-tokens do not fit are skipped and counted")
    p.add_argument("--out", help="output folder (default: RUN/eval/BENCH/step_N or runs/eval/MODEL/BENCH)")
    p.add_argument("--wandb", choices=("online", "offline", "disabled"), default="disabled")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("arena", help="Arena-Write style pairwise judging of several models' eval results")
    p.add_argument("--answers", nargs="+", required=True, metavar="NAME=RESULTS.jsonl",
                   help="each model's `lwz eval` results.jsonl")
    p.add_argument("--judge", required=True, help="HF folder of the judge model")
    p.add_argument("--out", required=True, help="output folder (judgments, leaderboard, summary)")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds")
    p.add_argument("--device", choices=("cpu", "gpu"), default=None)
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None)
    p.set_defaults(func=cmd_arena)


def cmd_eval(args: argparse.Namespace) -> int:
    from lwz.eval.run import GenerationSettings, run_benchmark
    from lwz.engines.vllm_engine import VllmEngine
    from lwz.runtime.device import engine_device
    from lwz.launch.worker import configure_logging

    model_dir, out_dir, run = _resolve_target(args)
    configure_logging(out_dir)  # vLLM's lines and Python warnings go to OUT/logs/libraries.rank0.log, not the terminal
    if run is not None and not model_dir.is_dir():
        from lwz.commands.export import export_checkpoint

        export_checkpoint(run, args.step, model_dir)
    device = args.device or engine_device()
    dtype = args.dtype or ("bf16" if device == "gpu" else "fp32")
    settings = GenerationSettings(template=args.template, chat_template=args.chat_template, max_tokens=args.max_tokens,
                                  temperature=args.temperature, limit=args.limit, progress=True)
    if args.tp < 1:
        raise LwzError(None, "--tp", f"{args.tp} must be >= 1")
    if args.cpu_kv_cache_gib is not None and (device != "cpu" or args.cpu_kv_cache_gib <= 0):
        raise LwzError(None, "--cpu-kv-cache-gib", f"{args.cpu_kv_cache_gib} applies on CPU only, as a positive size")
    engine = VllmEngine(str(model_dir), device=device, dtype=dtype, tp=args.tp, max_model_len=_context(model_dir, args),
                        cpu_kv_cache_gib=args.cpu_kv_cache_gib)
    critic = None
    if args.bench == "writingbench" and args.critic and Path(args.critic).resolve() != model_dir.resolve():
        critic = VllmEngine(args.critic, device=device, dtype=dtype, tp=args.tp,
                            max_model_len=_context(Path(args.critic), args))
    summary = run_benchmark(args.bench, engine, settings, out_dir, critic=critic, data=args.data)
    _log_wandb(args, out_dir, summary)
    skipped = f", {summary['skipped_too_long']} skipped (too long)" if summary["skipped_too_long"] else ""
    print(f"{args.bench}: score {summary['score']} over {summary['items']} items{skipped} in "
          f"{summary['seconds']:.1f} s -> {out_dir}")
    return 0


def cmd_arena(args: argparse.Namespace) -> int:
    from lwz.eval.arena import load_answers, run_arena
    from lwz.engines.vllm_engine import VllmEngine
    from lwz.runtime.device import engine_device

    results = {}
    for item in args.answers:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise LwzError(None, "--answers", f"{item!r}: expected NAME=RESULTS.jsonl")
        results[name] = path
    device = args.device or engine_device()
    judge = VllmEngine(args.judge, device=device, dtype=args.dtype or ("bf16" if device == "gpu" else "fp32"),
                       max_model_len=_context(Path(args.judge), args))
    summary = run_arena(load_answers(results), judge, Path(args.out), max_tokens=args.max_tokens, rounds=args.rounds)
    board = Path(args.out) / "leaderboard.txt"
    print(board.read_text() if board.is_file() else "no leaderboard: fewer than two models have parsed verdicts")
    print(f"{summary['parsed']} of {summary['comparisons']} verdicts parsed -> {args.out}")
    return 0


def _resolve_target(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """The model folder, the output folder and, for a run folder, the run (its checkpoint of `args.step`,
    the newest by default, is exported to RUN/export/step-N unless it already is)."""
    target = Path(args.target)
    if (target / "config.json").is_file():
        out = Path(args.out) if args.out else Path("runs") / "eval" / target.name / args.bench
        return target, out, None
    if (target / "recipe.yaml").is_file():
        from lwz.actor.checkpoint import latest_checkpoint, step_of

        if args.step is None:
            latest = latest_checkpoint(target / "ckpt")
            if latest is None:
                raise LwzError(str(target / "ckpt"), "--step", "the run has no checkpoint yet")
            args.step = step_of(latest)
        out = Path(args.out) if args.out else target / "eval" / args.bench / f"step-{args.step:08d}"
        return target / "export" / f"step-{args.step:08d}", out, target
    raise LwzError(str(target), None, "not an HF model folder (config.json) or a run folder (recipe.yaml)")


def _context(model_dir: Path, args: argparse.Namespace) -> int:
    """Context for the engine: --max-model-len, else the model's own limit."""
    if getattr(args, "max_model_len", None):
        return args.max_model_len
    config = json.loads((model_dir / "config.json").read_text())
    return int(config.get("max_position_embeddings", args.max_tokens + 4096))


def _log_wandb(args: argparse.Namespace, out_dir: Path, summary: dict) -> None:
    if args.wandb == "disabled":
        return
    import wandb

    run = wandb.init(project="lwz", job_type="eval", mode=args.wandb, dir=str(out_dir),
                     name=f"eval-{args.bench}-{Path(args.target).name}", config=vars(args) | {"func": None})
    run.log({f"eval/{args.bench}/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
    run.finish()
