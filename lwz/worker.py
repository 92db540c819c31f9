"""One rank of a run: `python -m lwz.worker RUN_DIR` (started by the local launcher, srun or submitit)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from lwz.errors import LwzError


def run_worker(run_dir: Path) -> None:
    """Load the run folder's resolved recipe, plan it and train (resuming from its last checkpoint)."""
    from lwz.plan.resolve import resolve
    from lwz.recipe.load import load_recipe
    from lwz.train import train

    recipe = load_recipe(run_dir / "recipe.yaml")
    train(recipe, resolve(recipe), run_dir)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("vllm", "urllib3", "filelock", "datasets", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        run_worker(Path(sys.argv[1]))
    except LwzError as e:
        print(f"lwz: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
