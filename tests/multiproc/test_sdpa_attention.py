"""`lwz.actor.sdpa_attention.SdpaAttention` equals megatron's `DotProductAttention` (outputs and
gradients within 1e-5 in fp32, GQA and MHA head layouts of TP=1 and TP=2 ranks) and refuses masks,
dropout and non-causal attention; run in a fresh process (tests/dist/sdpa_attention_check.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "dist" / "sdpa_attention_check.py"


def test_sdpa_attention_equals_megatron_dot_product_attention():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"
