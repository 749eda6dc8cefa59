"""CPU time of a process tree from /proc, for per-core rates: standard library only, so that
both mmtx's benchmarks and the peer scripts (another virtualenv) import it."""

from __future__ import annotations

import os


def tree_cpu_seconds(root: int | None = None) -> float:
    """User + system CPU seconds of process ``root`` (default: this one) and its live
    descendants (worker processes), from /proc (0.0 where /proc is missing)."""
    root = os.getpid() if root is None else root
    ticks = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0.0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parent[int(name)] = int(fields[1])
        cpu[int(name)] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for pid in cpu:
        node = pid
        while node and node != root:
            node = parent.get(node, 0)
        if node == root:
            total += cpu[pid]
    return total
