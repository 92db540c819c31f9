"""Shared test set-up: single-threaded torch, offline hubs."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixtures shared by the test modules, registered once here (a session fixture imported into several
# modules would be built once per module).
from fixtures_models import paper_models, peaked_qwen2, tailed_qwen2, tiny_qwen2  # noqa: E402,F401
from fixtures_slurm import slurm_cluster, two_node_cluster, two_nodes  # noqa: E402,F401
