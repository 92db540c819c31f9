"""lwz: GRPO for ultra-long writing, after LongWriter-Zero (arXiv 2506.18841)."""

__version__ = "0.1.0"
