"""Where open_clip's train step's time goes, in the parts ``benchmarks/profile_step.py`` uses
for mmtx: a ``torch.profiler`` trace of the step of ``open_clip_step.py``.

Runs in the peers' environment::

    benchmarks/peers/.venv-peers/bin/python benchmarks/peers/open_clip_profile.py [--threads 1]

Each aten op's self CPU time is put in a part by its own name or, failing that, by the nearest
enclosing op or record whose name says it (``mm`` / ``addmm`` / ``bmm`` / ``linear``:
``matmuls``; scaled-dot-product attention: ``attention_core``; ``layer_norm``; ``gelu``:
``activation``; convolution / embedding: ``embedding``; anything under ``Optimizer.step`` or
``clip_grad_norm_``: ``optimizer``; the rest ``other``), forward or backward by whether it runs
under autograd's engine. Pin both libraries the same way when comparing (``taskset -c 0`` with
``--threads 1`` here, ``--cores 1`` in ``profile_step.py``). Ends with one JSON line:
``step_ms``, ``op_ms``, ``parts``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip_step
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/profile_step.py
from profile_step import PARTS, format_table  # standard library only at its top level

_RULES = (
    (re.compile(r"Optimizer\.step|clip_grad_norm"), "optimizer"),
    (re.compile(r"scaled_dot_product|ScaledDotProduct"), "attention_core"),
    (re.compile(r"aten::(mm|addmm|bmm|linear|matmul)$|^(Mm|Addmm|Bmm)Backward"), "matmuls"),
    (re.compile(r"layer_norm|LayerNorm"), "layernorm"),
    (re.compile(r"gelu|Gelu"), "activation"),
    (re.compile(r"convolution|Convolution|embedding|Embedding"), "embedding"),
    (re.compile(r"cross_entropy|log_softmax|nll_loss|LogSoftmax|Nll"), "heads_and_loss"),
)


def part_of(names: Sequence[str]) -> str:
    """The part of an op given its own name then its ancestors' (innermost first)."""
    for pattern, part in _RULES[:1]:  # the optimizer contains everything under it
        if any(pattern.search(name) for name in names):
            return part
    for name in names:
        for pattern, part in _RULES[1:]:
            if pattern.search(name):
                return part
    return "other"


def _lineage(event: Any) -> list[str]:
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    return names


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, loss_fn, optimizer, (images, texts) = open_clip_step.build(args.batch_size, 0)

    def step() -> None:
        open_clip_step.train_step(model, loss_fn, optimizer, images, texts, False)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    table = {part: {"forward": 0.0, "backward": 0.0} for part in PARTS}
    for event in prof.events():
        if event.self_cpu_time_total <= 0 or not event.name.startswith("aten::"):
            continue
        lineage = _lineage(event)
        backward = any("autograd::engine" in name or "Backward" in name for name in lineage)
        direction = "backward" if backward else "forward"
        table[part_of(lineage)][direction] += event.self_cpu_time_total / 1e3 / args.steps
    step_ms = statistics.median(times) * 1e3
    op_ms = sum(row["forward"] + row["backward"] for row in table.values())
    print(f"open_clip: step {step_ms:.1f} ms, aten ops {op_ms:.1f} ms per step")
    print("\n".join(format_table(table)))
    result = {
        "library": "open_clip",
        "threads": torch.get_num_threads(),
        "step_ms": round(step_ms, 2),
        "op_ms": round(op_ms, 2),
        "parts": {p: {k: round(v, 2) for k, v in row.items()} for p, row in table.items()},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
