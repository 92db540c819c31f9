"""The one vocabulary-padding rule. Megatron holds the embedding and output layer with the HF vocabulary
rounded up to a multiple of TP, split over the TP ranks; the padded rows are zero and their logits are sliced
off (`lwz.actor.model.forward_logits`). The actor builds its model with it and the plan costs memory with
it, so a checkpoint has the shapes the plan promised."""

from __future__ import annotations

__all__ = ["padded_vocab_size"]


def padded_vocab_size(vocab_size: int, tp: int) -> int:
    """The embedding rows megatron holds: `vocab_size` rounded up to a multiple of `tp`."""
    return -(-vocab_size // tp) * tp
