"""The megatron reward model (scalar head, Bradley-Terry loss) over real gloo processes, and its export.

`dist_rm/bt_worker.py` trains the tiny Qwen2 backbone with a fresh scalar head for four steps on fixed
text pairs at TP1 (one rank), TP2, TP2 with sequence parallelism, PP2 and DP2: every layout takes the
same steps (loss, accuracy, grad norm, and the scores after training, within 1e-5). The TP2 run exports
an HF sequence-classification folder that transformers loads and scores as megatron did (1e-4); the loop
serves that folder with megatron again (tests/multiproc/test_writing_rm_serving.py).
"""

from __future__ import annotations

import pytest
import torch
from dist_actor.launch import REPO, run_distributed

pytestmark = pytest.mark.slow
WORKER = REPO / "tests" / "dist_rm" / "bt_worker.py"
LAYOUTS = {"tp2": ["--tp", "2"], "tp2_sp": ["--tp", "2", "--sequence-parallel"], "pp2": ["--pp", "2"], "dp2": []}


def run(folder, name: str, nproc: int, *args: str) -> dict:
    return run_distributed(nproc, folder / f"{name}.pt", WORKER, folder / f"{name}.pt", *args, timeout=300)


@pytest.fixture(scope="module")
def runs(module_folder) -> dict[str, dict]:
    folder = module_folder("bt")
    result = {"tp1": run(folder, "tp1", 1)}
    result.update({name: run(folder, name, 2, *args, *(["--export", str(folder / "rm")] if name == "tp2" else []))
                   for name, args in LAYOUTS.items()})  # fmt: skip
    result["tp2"]["folder"] = folder / "rm"
    return result


def test_bt_training_learns_and_every_layout_takes_the_same_steps(runs):
    reference = runs["tp1"]["metrics"]
    print("\n" + "\n".join(f"step {i}: loss {m['loss']:.6f} accuracy {m['accuracy']:.3f} grad norm {m['grad_norm']:.5f}"
                           for i, m in enumerate(reference)))  # fmt: skip
    assert reference[-1]["loss"] < reference[0]["loss"] - 0.1  # it learns these pairs
    assert reference[-1]["accuracy"] > reference[0]["accuracy"]
    for name in LAYOUTS:
        got = runs[name]["metrics"]
        for key in ("loss", "accuracy", "margin", "grad_norm", "lr"):
            assert [m[key] for m in got] == pytest.approx([m[key] for m in reference], rel=1e-5, abs=1e-6), (name, key)
        assert runs[name]["scores"] == pytest.approx(runs["tp1"]["scores"], rel=1e-5, abs=1e-6), name
    assert runs["tp1"]["scores"] != pytest.approx(runs["tp1"]["before"], abs=1e-3)  # the head and backbone moved


def test_exported_reward_model_scores_equal_transformers(runs):
    from lwz.rm.model import forward_scores, load_backbone

    run = runs["tp2"]
    megatron = run["scores"]
    model, tokenizer = load_backbone(run["folder"])
    assert type(model).__name__ == "Qwen2ForSequenceClassification"
    with torch.no_grad():
        hf = forward_scores(model.eval(), run["probe_ids"], tokenizer.pad_token_id).tolist()
    print(f"\nmegatron {megatron}\nHF       {hf}")
    assert hf == pytest.approx(megatron, abs=1e-4)
    assert len({round(s, 3) for s in megatron}) > 1  # not a constant head
