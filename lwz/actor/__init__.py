"""The policy's megatron-core model (`model`) and HF <-> megatron weight conversion (`convert`)."""
