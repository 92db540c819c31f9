"""Packed documents for continual pretraining (`lwz.cpt.packing`): a hand-made packed batch's inputs,
labels, loss mask and attention segments, and the megatron model on it (tests/dist/packed_attention_check.py:
packed logits equal each document's own, so attention and RoPE restart at end-of-document tokens)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from lwz.cpt.packing import pack_row, packed_batch

EOD = 0
SCRIPT = Path(__file__).parents[1] / "dist" / "packed_attention_check.py"


def test_a_hand_made_row_masks_the_loss_across_document_boundaries():
    # documents [1 2 3] [4 5] [6 7 8 9 ...] as a stream, each ended by EOD; a row of 8 takes 9 tokens
    row = pack_row(np.array([1, 2, 3, EOD, 4, 5, EOD, 6, 7]), EOD)
    assert row.tokens.tolist() == [1, 2, 3, EOD, 4, 5, EOD, 6]
    assert row.labels.tolist() == [2, 3, EOD, 4, 5, EOD, 6, 7]
    # no loss where the input is EOD (its label, 4 or 6, starts the next document); 3 -> EOD is learned
    assert row.loss_mask.tolist() == [1, 1, 1, 0, 1, 1, 0, 1]
    assert row.bounds.tolist() == [0, 4, 7, 8]  # attention segments: [1 2 3 EOD] [4 5 EOD] [6]


def test_a_row_that_starts_mid_document_or_ends_on_eod():
    assert pack_row(np.array([8, 9, EOD, 1]), EOD).bounds.tolist() == [0, 3]
    assert pack_row(np.array([8, 9, EOD]), EOD).loss_mask.tolist() == [1, 1]
    assert pack_row(np.array([5, 5, 5, 5]), EOD).bounds.tolist() == [0, 3]  # one document throughout


def test_rows_side_by_side_keep_their_own_segments():
    first = pack_row(np.array([1, 2, EOD, 3, 4]), EOD)
    second = pack_row(np.array([5, EOD, 6, 7, 8]), EOD)
    tokens, labels, mask, params = packed_batch([first, second])
    assert tokens.tolist() == [[1, 2, EOD, 3, 5, EOD, 6, 7]]
    assert labels.tolist() == [[2, EOD, 3, 4, EOD, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 1, 1, 0, 1, 1]]
    assert params.qkv_format == "thd" and params.cu_seqlens_q.tolist() == [0, 3, 4, 6, 8] and params.max_seqlen_q == 3


def test_packed_documents_through_the_megatron_model_equal_each_document_alone():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "LWZ_DEVICE": "cpu"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"
