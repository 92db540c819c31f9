"""Memory estimates against byte counts computed by hand from the model shapes."""

import pytest

from lwz.actor.vocab import padded_vocab_size
from lwz.plan.memory import actor_memory, engine_memory, hf_param_count
from lwz.recipe.schema import ArchCfg

QWEN25_7B = ArchCfg(family="qwen2", num_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
                    intermediate_size=18944, vocab_size=152064, max_position_embeddings=131072, qkv_bias=True,
                    tie_word_embeddings=False)
QWEN25_32B = ArchCfg(family="qwen2", num_layers=64, hidden_size=5120, num_attention_heads=40, num_key_value_heads=8,
                     intermediate_size=27648, vocab_size=152064, max_position_embeddings=131072, qkv_bias=True,
                     tie_word_embeddings=False)

# One layer by hand: q = heads x 128, kv = kv_heads x 128; h(q + 2kv) + q h + bias(q + 2kv) + 3 h f
LAYER_7B = 3584 * (3584 + 1024) + 3584 * 3584 + (3584 + 1024) + 3 * 3584 * 18944        # 233,050,624
LAYER_32B = 5120 * (5120 + 2048) + 5120 * 5120 + (5120 + 2048) + 3 * 5120 * 27648      # 487,595,008


def test_layer_counts_by_hand():
    assert LAYER_7B == 233_050_624 and LAYER_32B == 487_595_008


def test_hf_param_counts_match_published_sizes():
    # 7.62B and 32.76B are Qwen2.5's published parameter counts
    assert hf_param_count(QWEN25_7B) == 28 * (LAYER_7B + 2 * 3584) + 2 * 152064 * 3584 + 3584 == 7_615_616_512
    assert hf_param_count(QWEN25_32B) == 64 * (LAYER_32B + 2 * 5120) + 2 * 152064 * 5120 + 5120 == 32_763_876_352


def test_vocab_padding():
    # the actor's rule (lwz.actor.vocab): a multiple of TP, the rows the actor's checkpoints hold
    assert padded_vocab_size(152064, 4) == 152064
    assert padded_vocab_size(152064, 8) == 152064          # 152064 = 19008 x 8
    assert padded_vocab_size(151936, 1) == 151936
    assert padded_vocab_size(1001, 2) == 1002


def test_7b_tp4_pp1_dp2_no_recompute():
    (s,) = actor_memory(QWEN25_7B, dtype="bf16", tp=4, pp=1, dp=2, micro_batch_tokens=8192)
    params = 28 * (LAYER_7B // 4 + 2 * 3584) + 152064 * 3584 // 4 + 3584 + 152064 * 3584 // 4
    assert s.params == params == 1_904_057_344
    assert (s.weights, s.grads, s.optimizer, s.reference) == (2 * params, 4 * params, 12 * params // 2, 0)
    per_layer = 8192 * 2 * (4 * 3584 + (2 * 3584 + 2 * 512 + 3 * 18944) // 4)
    logits = 2 * 4 * 2048 * 152064 // 4          # one projection chunk of 2048 positions (the default)
    assert s.activations == 28 * per_layer + logits == 14_656_995_328
    assert s.total == 2 * params + 4 * params + 6 * params + 14_656_995_328


SMOLLM2 = ArchCfg(family="llama", num_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                  intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True)


def test_local_spec_counts_what_autograd_saves_there_and_the_backward_working_set():
    """CPU's layer spec at SmolLM2's shape, fp32, 4,416 tokens: bench/update_memory.py measured 6.80 GiB saved
    for the backward and 9.36 GiB of resident memory above the update's start."""
    (s,) = actor_memory(SMOLLM2, dtype="fp32", tp=1, pp=1, dp=1, micro_batch_tokens=4416, vocab_chunk_tokens=64,
                        local_spec=True)
    saved = 30 * 4416 * 4 * (6 * 576 + 4 * 576 + 192 + 5 * 1536 + 64)   # 13,696 floats a token a layer
    assert saved / 2**30 == pytest.approx(6.80, rel=0.01)
    vocab_grads = 2 * 4 * 49152 * 576                  # the embedding's and the (tied) projection's, PP = 1
    assert s.activations == -(-saved * 14 // 10) + vocab_grads + 2 * 4 * 64 * 49152
    assert 9.36 <= s.activations / 2**30 <= 1.1 * 9.36


def test_7b_tp2_pp2_dp2_full_recompute_with_reference():
    stages = actor_memory(QWEN25_7B, dtype="bf16", tp=2, pp=2, dp=2, recompute="full", micro_batch_tokens=4096,
                          vocab_chunk_tokens=8192, reference=True)
    first = 14 * (LAYER_7B // 2 + 2 * 3584) + 152064 * 3584 // 2
    last = 14 * (LAYER_7B // 2 + 2 * 3584) + 3584 + 152064 * 3584 // 2
    assert [s.params for s in stages] == [first, last]
    assert stages[0].reference == 2 * first
    one_layer = 4096 * 2 * (4 * 3584 + (2 * 3584 + 2 * 512 + 3 * 18944) // 2)
    assert stages[0].activations == 2 * 14 * 4096 * 2 * 3584 + one_layer          # 2 micro-batches in flight
    assert stages[1].activations == 1 * 14 * 4096 * 2 * 3584 + one_layer + 2 * 4 * 4096 * 152064 // 2  # chunk > T


def test_32b_tp8_pp2_dp4_sequence_parallel_full_recompute():
    stages = actor_memory(QWEN25_32B, dtype="bf16", tp=8, pp=2, dp=4, recompute="full", sequence_parallel=True,
                          micro_batch_tokens=16384, vocab_chunk_tokens=1024)
    vocab = 152064   # a multiple of TP 8 already
    first = 32 * (LAYER_32B // 8 + 2 * 5120) + vocab * 5120 // 8
    assert stages[0].params == first == 2_048_028_672
    assert stages[0].optimizer == 12 * first // 4
    one_layer = 16384 * 2 * (4 * 5120 // 8 + (2 * 5120 + 2 * 1024 + 3 * 27648) // 8)
    assert stages[0].activations == 2 * 32 * 16384 * 2 * 5120 // 8 + one_layer
    assert stages[1].activations == 32 * 16384 * 2 * 5120 // 8 + one_layer + 2 * 4 * 1024 * vocab // 8


def test_32b_tp4_pp4_dp2_fp32_without_distributed_optimizer():
    stages = actor_memory(QWEN25_32B, dtype="fp32", tp=4, pp=4, dp=2, distributed_optimizer=False,
                          micro_batch_tokens=2048)
    middle = 16 * (LAYER_32B // 4 + 2 * 5120)
    assert stages[1].params == stages[2].params == middle
    assert stages[1].weights == 4 * middle and stages[1].optimizer == 8 * middle   # fp32: no master copy
    per_layer = 2048 * 4 * (4 * 5120 + (2 * 5120 + 2 * 1024 + 3 * 27648) // 4)
    assert stages[1].activations == (4 - 1) * 16 * per_layer


@pytest.mark.parametrize("tp, kv_heads_per_rank", [(4, 2), (8, 1), (16, 1)])
def test_engine_kv_cache_32b(tp, kv_heads_per_rank):
    m = engine_memory(QWEN25_32B, dtype="bf16", tp=tp, sequences=32, tokens_per_sequence=15024, budget=None)
    assert m.kv_cache == 32 * 15024 * 2 * 64 * kv_heads_per_rank * 128 * 2
    assert m.weights == -(-32_763_876_352 // tp) * 2
    assert m.budget == m.total
