"""vLLM engines as lwz uses them (rollout, evaluation, length annotation): sampling, sleep and wake under the
GPU's rules, weight reloads, and each engine's own model-parallel groups."""
