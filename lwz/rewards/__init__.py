"""Rewards of LongWriter-Zero (length, format; writing RM) and how they become advantages."""
