"""Documents packed into fixed-length rows for next-token training, as megatron's GPT datasets pack them.

The corpus is one token stream in which every document ends with the end-of-document token (EOD). A
row is `seq_length + 1` consecutive stream tokens: inputs are the first `seq_length`, labels the last;
a document may run on into the next row. Inside a row, attention and positions restart after every
EOD: the row's documents (pieces of documents) are given as cumulative lengths, megatron's
`PackedSeqParams` in the THD layout (transformer-engine's varlen attention on GPU, `SdpaAttention`'s
block-diagonal mask on CPU; RoPE restarts per piece in both). The loss skips positions whose input is
an EOD (their label is the next document's first token); a document's last token learns to predict EOD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PackedRow", "pack_row", "packed_batch"]


@dataclass(frozen=True)
class PackedRow:
    """One row: inputs, labels and loss mask [seq_length]; `bounds` [pieces + 1], where each piece starts."""

    tokens: np.ndarray
    labels: np.ndarray
    loss_mask: np.ndarray
    bounds: np.ndarray


def pack_row(window: np.ndarray, eod: int) -> PackedRow:
    """The row made of `window`, `seq_length + 1` consecutive tokens of the document stream."""
    window = np.asarray(window, dtype=np.int64)
    tokens, labels = window[:-1], window[1:]
    after_eod = np.flatnonzero(tokens == eod) + 1
    bounds = np.unique(np.concatenate([[0], after_eod, [len(tokens)]]))
    return PackedRow(tokens, labels, (tokens != eod).astype(np.float32), bounds)


def packed_batch(rows: Sequence[PackedRow]):
    """(tokens [1, B * L], labels [1, B * L], loss mask [1, B * L], `PackedSeqParams`): the rows side by side
    in one THD sequence, each row's pieces their own attention segments."""
    from megatron.core.packed_seq_params import PackedSeqParams

    offsets = np.cumsum([0] + [len(r.tokens) for r in rows[:-1]])
    bounds = np.unique(np.concatenate([r.bounds + o for r, o in zip(rows, offsets)]))
    cu = torch.tensor(bounds, dtype=torch.int32)
    longest = int(cu.diff().max())
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=longest,
                             max_seqlen_kv=longest)  # fmt: skip
    stack = [torch.from_numpy(np.concatenate([getattr(r, f) for r in rows]))[None] for f in ("tokens", "labels",
                                                                                           "loss_mask")]
    return stack[0], stack[1], stack[2], params
