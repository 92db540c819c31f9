"""Export RUN's checkpoint of STEP to OUT with `lwz export`, then load OUT with transformers.

Writes {"logits": HF logits of the probe tokens, "config": the exported config} to OUT/../check.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lwz.cli import main

if __name__ == "__main__":
    run, step, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    assert main(["export", run, "--step", step, str(out)]) == 0   # first: megatron is imported under its log routing
    from actor_worker import LOGIT_PROBE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = model(torch.tensor(LOGIT_PROBE)).logits
    torch.save({"logits": logits, "decoded": tokenizer.decode(LOGIT_PROBE[0])}, out.parent / "check.pt")
