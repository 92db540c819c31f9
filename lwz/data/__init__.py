"""Training prompts and the templates that wrap them."""
