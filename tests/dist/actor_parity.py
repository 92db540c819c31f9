"""Megatron actor vs transformers, run in real processes over gloo.

Usage: python tests/dist/actor_parity.py CASES_JSON OUT_JSON
CASES_JSON lists {"name", "hf_dir", "dtype", "layouts": [[tp, pp], ...], "export": dir or null}.
The script spawns 4 ranks; for each case and layout it builds the megatron model, loads the HF
weights, compares full-vocabulary logits with transformers, checks that every gathered HF tensor
equals the checkpoint's and, at TP2 x PP2, exports an HF folder when asked. Rank 0 writes the
results.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.multiprocessing as mp

from lwz.launch.ports import free_port_block

WORLD_SIZE = 4


def worker(rank: int, port: int, cases: list[dict], out_json: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(WORLD_SIZE),  # set all of torchrun's variables: the parent's may leak in
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from megatron.core import parallel_state

    from lwz.runtime import destroy_distributed

    results = [r for case in cases for r in run_case(rank, **case)]
    gathered = [None] * WORLD_SIZE
    torch.distributed.all_gather_object(gathered, results)
    if rank == 0:
        with open(out_json, "w") as f:
            json.dump([r for rank_results in gathered for r in rank_results], f)
    assert not parallel_state.model_parallel_is_initialized()
    destroy_distributed()


def run_case(
    rank: int, name: str, hf_dir: str, dtype: str, layouts: list[list[int]], export: str | None
) -> list[dict]:
    from megatron.core import parallel_state
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lwz.actor.convert import (
        export_hf_folder,
        iter_hf_weights,
        load_hf_into_megatron,
        read_hf_config,
    )
    from lwz.actor.model import build_gpt_model, forward_logits
    from lwz.runtime import init_distributed

    config = read_hf_config(hf_dir)
    dtype = getattr(torch, dtype)
    reference = {
        k: v.to(dtype) for k, v in load_file(os.path.join(hf_dir, "model.safetensors")).items()
    }
    input_ids = torch.randint(
        0, config["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(7)
    )
    expected = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)(
        input_ids
    ).logits.detach()
    results = []
    for tp, pp in layouts:
        init_distributed(tp, pp, seed=1)
        model = build_gpt_model(config, dtype=dtype)
        load_hf_into_megatron(model, hf_dir)
        logits = forward_logits(model, input_ids)
        names, unequal = [], []
        for hf_name, tensor in iter_hf_weights(model, config):
            names.append(hf_name)
            if not torch.equal(tensor, reference[hf_name]):
                unequal.append(hf_name)
        if export and (tp, pp) == (2, 2):
            export_hf_folder(model, config, export, source_dir=hf_dir)
        results.append(
            {
                "case": name,
                "tp": tp,
                "pp": pp,
                "rank": rank,
                "last_stage": parallel_state.is_pipeline_last_stage(),
                "max_abs_diff": None if logits is None else (logits - expected).abs().max().item(),
                "logits_shape": None if logits is None else list(logits.shape),
                "names": names,
                "unequal": unequal,
            }
        )
        parallel_state.destroy_model_parallel()
    return results


if __name__ == "__main__":
    cases_json, out_json = sys.argv[1:3]
    with open(cases_json) as f:
        cases = json.load(f)
    mp.spawn(worker, args=(free_port_block(), cases, out_json), nprocs=WORLD_SIZE)
