"""`lwz pipeline FILE [key=value | STAGE:key=value ...] [--dry-run]`: stages that hand models on
(continual pretraining, reward model, RL), in order here or as chained SLURM jobs (lwz.launch.pipeline)."""

from __future__ import annotations

import argparse


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Plan and check every stage, then list them (--dry-run) or run them."""
    from lwz.launch.pipeline import check_pipeline_inputs, describe_stage, plan_pipeline, run_pipeline

    name, stages = plan_pipeline(args.pipeline, args.overrides)
    check_pipeline_inputs(args.pipeline, stages)
    if args.dry_run:
        print(f"{name}: {len(stages)} stage(s); dry run, nothing written or started")
        for stage in stages:
            print(f"  {describe_stage(stage)}")
        return 0
    return run_pipeline(name, stages, tell=print)


def register(subparsers) -> None:
    """Add `pipeline` to the `lwz` sub-commands."""
    p = subparsers.add_parser("pipeline", help="run stages that hand models on (pretrain -> reward model -> RL) "
                              "in order, or as SLURM jobs chained by --dependency=afterok")
    p.add_argument("pipeline", help="pipeline file (name:, stages: [{name, recipe, set, inputs}])")
    p.add_argument("overrides", nargs="*", metavar="[STAGE:]key=value",
                   help="overrides of every stage, or of one (STAGE:key=value)")
    p.add_argument("--dry-run", action="store_true", help="plan and check every stage; write and start nothing")
    p.set_defaults(func=cmd_pipeline)
