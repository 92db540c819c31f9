"""Continual pretraining: next-token training of the actor's megatron model on packed long documents."""
