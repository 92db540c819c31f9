"""`lwz plan recipes/longwriter_zero.yaml` is pinned: placement of 64 GPUs and memory per GPU.

Regenerate after an intended change with LWZ_UPDATE_GOLDEN=1 and review the diff.
"""

import os
from pathlib import Path

from lwz.cli import main

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "longwriter_zero.plan.txt"


def test_paper_plan_matches_golden(capsys, monkeypatch):
    monkeypatch.delenv("LWZ_MODELS", raising=False)
    assert main(["plan", str(ROOT / "recipes" / "longwriter_zero.yaml")]) == 0
    out = capsys.readouterr().out
    if os.environ.get("LWZ_UPDATE_GOLDEN"):
        GOLDEN.write_text(out)
    assert out == GOLDEN.read_text()
    lines = out.splitlines()
    assert sum(1 for line in lines if line.strip() and line.split()[0].isdigit() and "|" in line) == 64
    assert "peak per actor GPU by phase" in out
