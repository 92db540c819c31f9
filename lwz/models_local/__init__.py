"""Models lwz builds locally into its cache (`${asset:NAME}` in recipes): the tiny Qwen2, SmolLM2-135M from
the GGUF in a wheel, and where they live."""
