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


def configure_logging() -> None:
    """lwz's INFO lines on stderr (also under submitit, which installs handlers of its own); libraries quieter."""
    lwz_log = logging.getLogger("lwz")
    lwz_log.setLevel(logging.INFO)
    if not lwz_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
        lwz_log.addHandler(handler)
        lwz_log.propagate = False
    for noisy in ("vllm", "urllib3", "filelock", "datasets", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> int:
    configure_logging()
    try:
        run_worker(Path(sys.argv[1]))
    except LwzError as e:
        print(f"lwz: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
