"""The `lwz` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lwz.errors import LwzError

log = logging.getLogger("lwz")


def _load_and_plan(recipe_path: str, overrides: Sequence[str]):
    from lwz.plan.resolve import resolve
    from lwz.recipe.load import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    try:
        plan = resolve(recipe)
    except LwzError as e:
        raise LwzError(e.where or recipe_path, e.key, e.message) from None
    return recipe, plan


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the resolved settings, the placement table and the memory table."""
    from lwz.plan.render import render_plan

    recipe, plan = _load_and_plan(args.recipe, args.overrides)
    sys.stdout.write(render_plan(recipe, plan))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Create (or reopen) the run folder and start the run, locally or on SLURM; --dry-run stops there.
    `lwz train-rm` and `lwz pretrain` are the same for recipes of their stage (`args.stage`)."""
    from lwz.models_local.assets import build_recipe_assets
    from lwz.launch.choose import launch
    from lwz.launch.preflight import check_inputs
    from lwz.runfolder import create_run_folder, open_run

    resuming = Path(args.recipe).is_dir()
    if resuming:
        folder, recipe, plan = open_run(Path(args.recipe), args.overrides)
    else:
        recipe, plan = _load_and_plan(args.recipe, args.overrides)
    if args.stage is not None and recipe.stage != args.stage:
        command = {"grpo": "run", "reward_model": "train-rm", "pretrain": "pretrain"}[recipe.stage]
        raise LwzError(args.recipe, "stage", f"is {recipe.stage}: lwz {args.command} runs stage {args.stage} "
                       f"recipes (use lwz {command})")
    check_inputs(recipe)
    if not resuming:
        folder = create_run_folder(recipe, plan, resume=args.resume)
    if args.dry_run:
        print(f"dry run: wrote {folder}/recipe.yaml and {folder}/plan.txt; nothing started")
        return 0
    build_recipe_assets(recipe)
    return launch(recipe, plan, folder, tell=print)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lwz", description="GRPO for ultra-long writing (LongWriter-Zero).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="resolve a recipe and print its plan")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_plan)

    for name, stage, what in (("run", None, "run a recipe (locally or on SLURM), or resume a run folder"),
                              ("train-rm", "reward_model", "train a writing reward model (Bradley-Terry, megatron "
                               "TP/PP/DP) from a recipe of stage reward_model, or resume its run folder"),
                              ("pretrain", "pretrain", "continual pretraining on packed documents (megatron TP/PP/DP) "
                               "from a recipe of stage pretrain, or resume its run folder")):
        p = sub.add_parser(name, help=what)
        p.add_argument("recipe", help="a recipe file, or a run folder to resume")
        p.add_argument("overrides", nargs="*", metavar="key=value")
        p.add_argument("--dry-run", action="store_true", help="write the run folder (recipe, plan) and stop")
        p.add_argument("--resume", action="store_true",
                       help="continue the run folder logging.run names (default: the newest) from its last checkpoint")
        p.set_defaults(func=cmd_run, stage=stage)

    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list:
    """Sub-command modules, each with `register(subparsers)` (imports stay light: work is imported lazily)."""
    from lwz.commands import annotate, eval, export, pipeline, runs

    return [annotate, eval, export, pipeline, runs]


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # before torch is imported: no C++ notices
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    unknown = [r for r in rest if r.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    try:
        return args.func(args)
    except LwzError as e:
        print(f"lwz: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lwz: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
