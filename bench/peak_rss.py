"""Run a command and report the peak resident memory of its whole process tree.

    python bench/peak_rss.py CMD [ARGS ...]

The command's output passes through; its exit status is this script's. The tree's memory is sampled
every 0.1 s as the sum of each process's PSS (proportional set size: pages shared by forked children
count once, split between them), and the last line on stderr is `PEAK_RSS_GB <float>`.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def tree_rss(process: psutil.Process) -> int:
    """Bytes resident in `process` and all its descendants, by PSS (those that vanish meanwhile count 0)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def main() -> int:
    child = subprocess.Popen(sys.argv[1:])
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(process))
        except psutil.Error:
            pass
        time.sleep(0.1)
    print(f"PEAK_RSS_GB {peak / 1024**3:.3f}", file=sys.stderr, flush=True)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
