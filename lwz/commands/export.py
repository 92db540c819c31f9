"""`lwz export RUN --step N OUT`: a run's checkpoint as an HF model folder (transformers, vLLM)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lwz.errors import LwzError
from lwz.launch.ports import free_port_block

log = logging.getLogger(__name__)


def export_checkpoint(run: str | Path, step: int, out: str | Path) -> Path:
    """Load RUN's checkpoint of `step` at TP=PP=1 in this process and write an HF folder to `out`.

    The folder holds config.json, safetensors and the tokenizer files of the recipe's model path.
    """
    import torch

    from lwz.actor.checkpoint import checkpoint_folder, load_model_weights
    from lwz.actor.convert import export_hf_folder, read_hf_config
    from lwz.actor.model import build_gpt_model
    from lwz.launch.env import DistEnv
    from lwz.recipe.load import load_recipe
    from lwz.runtime import destroy_distributed, init_distributed

    run, out = Path(run), Path(out)
    recipe_file = run / "recipe.yaml"
    if not recipe_file.is_file():
        raise LwzError(str(run), "recipe.yaml", "not found: RUN must be a run folder")
    folder = checkpoint_folder(run / "ckpt", step)
    if not (folder / "metadata.json").is_file():
        saved = sorted(p.name for p in (run / "ckpt").glob("step-*")) if (run / "ckpt").is_dir() else []
        raise LwzError(str(run / "ckpt"), "--step", f"no checkpoint of step {step} (saved: {', '.join(saved) or 'none'})")
    if out.exists():
        raise LwzError(None, "OUT", f"{out} already exists")
    recipe = load_recipe(recipe_file)
    hf_config = read_hf_config(recipe.model.path)
    init_distributed(tp=1, pp=1, device="cpu", env=DistEnv(master_addr="127.0.0.1", master_port=free_port_block()))
    try:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[recipe.model.dtype]
        model = build_gpt_model(hf_config, dtype=dtype)
        load_model_weights(folder, model)
        export_hf_folder(model, hf_config, out, source_dir=recipe.model.tokenizer or recipe.model.path)
    finally:
        destroy_distributed()
    log.info("exported %s to %s", folder, out)
    return out


def cmd_export(args: argparse.Namespace) -> int:
    """Export and print where the folder went; megatron's warnings go to RUN/logs/libraries.rank0.log."""
    from lwz.launch.worker import configure_logging

    if (Path(args.run) / "recipe.yaml").is_file():   # else export_checkpoint says RUN is no run folder
        configure_logging(Path(args.run))
    out = export_checkpoint(args.run, args.step, args.out)
    print(f"exported step {args.step} of {args.run} to {out}")
    return 0


def register(subparsers) -> None:
    """Add `export` to the `lwz` sub-commands."""
    p = subparsers.add_parser(
        "export", help="write a checkpoint of a run as an HF model folder",
        description="Loads RUN/ckpt/step-N (saved at any TP/PP/DP) in one CPU process and writes OUT: "
                    "config.json, safetensors and the tokenizer of the recipe's model, loadable by "
                    "transformers and vLLM.")  # fmt: skip
    p.add_argument("run", help="run folder (holds recipe.yaml and ckpt/)")
    p.add_argument("--step", type=int, required=True, help="the step whose checkpoint to export")
    p.add_argument("out", help="new HF model folder")
    p.set_defaults(func=cmd_export)
